"""Lightning callbacks: saving on interruption, and a model summary without noise.

Clusters preempt jobs with SIGTERM (SLURM, Kubernetes) and people press Ctrl-C:
either way the state at the last finished step is saved as ``last.ckpt`` so that
``ckpt_path=last`` continues from there instead of from the last periodic
checkpoint. The progress bar is in ``progress.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.model_summary import get_human_readable_count

# Lightning's own summary logs here: the table goes where Lightning's messages go.
_summary_log = logging.getLogger("pytorch_lightning.callbacks.model_summary")


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


class ModelSummary(pl.callbacks.ModelSummary):
    """Lightning's model summary table without its FLOPs column and "0 Total Flops" line.

    Lightning counts FLOPs only for a module with an ``example_input_array``,
    which this one has not (its input size is a config value), so they always
    read 0. The per-mode module counts are left out too: the frozen VGG is in
    eval mode on purpose.
    """

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        columns = [(name, list(values)) for name, values in summary_data if name != "FLOPs"]
        widths = [max([len(name), *(len(str(v)) for v in values)]) for name, values in columns]
        rows = [" | ".join(name.ljust(w) for (name, _), w in zip(columns, widths, strict=True))]
        rule = "-" * len(rows[0])
        rows.append(rule)
        for i in range(len(columns[0][1]) if columns else 0):
            cells = zip(columns, widths, strict=True)
            rows.append(" | ".join(str(values[i]).ljust(w) for (_, values), w in cells))
        rows.append(rule)
        frozen = total_parameters - trainable_parameters
        rows += [
            f"{get_human_readable_count(trainable_parameters):<10}Trainable params",
            f"{get_human_readable_count(frozen):<10}Non-trainable params",
            f"{get_human_readable_count(total_parameters):<10}Total params",
            f"{model_size:<10,.3f}Total estimated model params size (MB)",
        ]
        _summary_log.info("\n" + "\n".join(row.rstrip() for row in rows))
