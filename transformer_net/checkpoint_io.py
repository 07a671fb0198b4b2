"""Lightning checkpoint I/O that never destroys the previous good checkpoint.

Lightning's own ``TorchCheckpointIO`` writes through an fsspec transaction whose
temporary file lives in ``$TMPDIR``; when the output folder is on another
filesystem (a tmpfs ``/tmp``, a cluster's node-local ``/tmp`` with the outputs on
network storage) committing it is a copy that first truncates the existing
``last.ckpt``, so a crash or a full disk at that moment loses both checkpoints.
This plug-in writes like every other file of the project, through
:func:`transformer_net.atomic.atomic_torch_save`: serialized to memory, the
free space checked, a temporary file in the destination folder, fsynced, then
``os.replace``.
"""

from __future__ import annotations

import os
from typing import Any

from pytorch_lightning.plugins import TorchCheckpointIO

from .atomic import atomic_torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with an atomic, same-folder, disk-full-aware save."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        atomic_torch_save(checkpoint, path)
