"""Lightning callbacks that keep a long training run from losing work.

Clusters preempt jobs with SIGTERM (SLURM, Kubernetes) and people press Ctrl-C:
either way the state at the last finished step is saved as ``last.ckpt`` so that
``ckpt_path=last`` continues from there instead of from the last periodic
checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.exceptions import SIGTERMException


class CheckpointOnInterrupt(pl.Callback):
    """Save ``<dirpath>/<filename>`` when training stops on SIGTERM or Ctrl-C.

    Lightning turns SIGTERM into ``SIGTERMException`` at the end of the current
    step (so the saved state is consistent) and calls ``on_exception`` on every
    rank; the checkpoint is written by rank 0.
    """

    def __init__(self, *, dirpath: str, filename: str = "last.ckpt"):
        self.path = Path(dirpath) / filename

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return
        if trainer.global_step == 0:
            return  # nothing learned yet: keep whatever checkpoint was there
        trainer.save_checkpoint(self.path, weights_only=False)
        rank_zero_info(
            f"interrupted at step {trainer.global_step}: saved {self.path} "
            "(resume with ckpt_path=last)"
        )
