"""What a training run prints besides its progress bar.

``quiet_lightning`` is the one place where Lightning's console notes are filtered:
advertising, restatements of values this project sets on purpose, and warnings
about choices made on purpose. Every other warning still shows. ``next_steps``
is the block printed at the end of a run: where the results are and the
commands that use them.
"""

from __future__ import annotations

import logging
import re
import shlex
import warnings
from collections.abc import Sequence
from pathlib import Path

# Lightning's info messages (logging records) that tell a user of this project nothing.
_QUIET_INFO = re.compile(
    "|".join(
        [
            r"💡 Tip:",  # advertising for Lightning's cloud services (litlogger, litmodels)
            # A Trainer argument set to its default, restated (trainer.limit_val_batches: 1.0).
            r"`Trainer\(\w+=1\.0\)` was configured so ",
            # The normal end of a run; next_steps() says how many steps were trained.
            r"`Trainer\.fit` stopped: `max_steps=",
            # Our own ModelSummary (callbacks.py) replaces Lightning's on purpose.
            r"Trainer already configured with model summary callbacks",
        ]
    )
)
# Lightning's warnings about choices this project makes on purpose: (message regex, why).
_QUIET_WARNINGS = (
    # data.num_workers is chosen: null means min(8, CPUs - 1), else the user's number.
    (r"The '\w+' does not have many workers", "data.num_workers"),
    # Resuming (ckpt_path=last) and overwrite=true write into the run's own folder.
    (r"Checkpoint directory .* exists and is not empty", "resume"),
    # The frozen VGG is in eval mode on purpose.
    (r".*module\(s\) in eval mode at the start of training", "frozen VGG"),
    # Logging counts global steps, so short epochs still log every log_every_n_steps.
    (r"The number of training batches \(\d+\) is smaller than the logging interval", "epochs"),
    # A deprecation inside Lightning itself, not actionable by users.
    (r".*treespec, LeafSpec", "Lightning internals"),
)
# Loggers through which Lightning's rank_zero_info messages are emitted.
_LIGHTNING_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning_utilities.core.rank_zero",
)


class _QuietFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _QUIET_INFO.search(record.getMessage())


_FILTER = _QuietFilter()


def quiet_lightning() -> None:
    """Hide Lightning's notes that do not apply to this project (idempotent).

    The filter sits on the loggers that emit the messages, so it works whatever
    handlers print them (Lightning's own, Hydra's, pytest's).
    """
    names = list(_LIGHTNING_LOGGERS)
    try:  # rank_zero_info logs through this module's ``log``, rebound on import
        from lightning_utilities.core import rank_zero

        names.append(rank_zero.log.name)
    except (ImportError, AttributeError):
        pass
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for pattern, _why in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def next_steps(
    *,
    steps: int,
    seconds: float,
    model_file: Path,
    preview: Path | None,
    model_folder: Path | None = None,
    log_dir: Path | None,
    styles: Sequence[str] = (),
) -> str:
    """The lines printed when a run ends: results and the commands that use them."""
    q = shlex.quote
    lines = [f"Trained {steps} steps in {_duration(seconds)}."]
    lines.append(f"  model file:  {model_file}")
    if model_folder is not None:  # the Hugging Face layout, to share (docs/sharing.md)
        lines.append(f"  to share:    {model_folder} (publish: scripts/publish_model.py)")
    if preview is not None:
        lines.append(f"  preview:     {preview}")
    if log_dir is not None:
        lines.append(f"  TensorBoard: tensorboard --logdir {q(str(log_dir))}")
    lines.append("Stylize a photo:")
    lines.append(
        f"  python stylize.py --model {q(str(model_file))} --input photo.jpg --output out.jpg"
    )
    if len(styles) > 1:
        listed = ", ".join(f"{i} {name}" for i, name in enumerate(styles))
        lines.append(f"  (--style-index N picks the style: {listed})")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}" if minutes else f"{secs} s"
