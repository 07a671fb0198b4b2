"""The console progress bar of a training run: the whole run, not one epoch.

Lightning's bar counts the batches of the current epoch, which for a small
photo folder restarts every few seconds and says nothing about when the run
ends. ``StepProgressBar`` shows the optimizer step out of ``max_steps`` with the
rate, the time left and the current losses::

    step 120/500  24%|████▊               | 1.43 steps/s, ETA 04:25, loss/total=1.234, val/loss=1.3

When stderr is not a terminal (a log file, a batch job) it writes whole lines
every ``file_refresh_rate`` steps instead of thousands of in-place updates.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm

from .errors import ConfigError

_TTY_FORMAT = (
    "step {n_fmt}/{total_fmt} {percentage:3.0f}%|{bar:20}| {speed}, ETA {remaining}{postfix}"
)
_FILE_FORMAT = (
    "step {n_fmt}/{total_fmt} ({percentage:.0f}%) {elapsed} elapsed, {speed}, "
    "ETA {remaining}{postfix}"
)
_OPEN_FORMAT = "step {n_fmt} {elapsed} elapsed, {speed}{postfix}"  # no step limit known


class _StepTqdm(Tqdm):
    """A tqdm bar whose rate reads ``1.43 steps/s`` or ``6.21 s/step``."""

    @property
    def format_dict(self) -> dict[str, Any]:
        d = super().format_dict
        steps = d["n"] - d.get("initial", 0)
        rate = steps / d["elapsed"] if d["elapsed"] > 0 and steps > 0 else None
        if rate is None:
            d["speed"] = "? steps/s"
        elif rate >= 1:
            d["speed"] = f"{rate:.2f} steps/s"
        else:
            d["speed"] = f"{1 / rate:.2f} s/step"
        return d


def _has_width(stream: TextIO) -> bool:
    """False for a terminal that reports 0 columns (some CI pseudo-terminals): tqdm
    would draw nothing there, so it gets lines as a log file does."""
    try:
        return os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, OSError, ValueError):  # no file descriptor: assume a width
        return True


class _Lines:
    """Turns tqdm's in-place updates (``\\r`` + text) into whole lines, for log files."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line and line != self.last:  # tqdm redraws the same text on close
            self.stream.write(line + "\n")
            self.last = line

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


class StepProgressBar(TQDMProgressBar):
    """One bar for the whole run: step n/max_steps, rate, ETA and the losses.

    ``refresh_rate``: steps between redraws on a terminal. ``file_refresh_rate``:
    steps between lines when stderr is not a terminal; None: every
    ``trainer.log_every_n_steps`` (the steps at which the losses are updated).
    ``metrics``: the logged values shown, in this order, once they are known.
    The sanity check and validation get no bars of their own: they take a few
    batches, and the validation loss appears on the main bar when it is known.
    """

    def __init__(
        self,
        refresh_rate: int = 1,
        file_refresh_rate: int | None = None,
        metrics: Sequence[str] = ("loss/total", "val/loss"),
    ):
        super().__init__(refresh_rate=refresh_rate, leave=False)
        if file_refresh_rate is not None and file_refresh_rate < 1:
            raise ConfigError(
                "callbacks.progress_bar.file_refresh_rate must be >= 1 or null, "
                f"got {file_refresh_rate}"
            )
        self._tty_refresh_rate = self.refresh_rate
        self.file_refresh_rate = file_refresh_rate
        self.metrics = tuple(metrics)
        self._tty = True
        self._last_n = -1
        self._shown: tuple[int, str | None] = (-1, None)  # (step, postfix) last drawn

    # --- the bars -------------------------------------------------------------

    def _silent(self) -> Tqdm:
        return Tqdm(disable=True)

    def init_sanity_tqdm(self) -> Tqdm:
        return self._silent()

    def init_validation_tqdm(self) -> Tqdm:
        return self._silent()

    def init_train_tqdm(self) -> Tqdm:
        trainer = self.trainer
        stream = sys.stderr  # looked up now: tests and callers may have replaced it
        self._tty = bool(getattr(stream, "isatty", lambda: False)()) and _has_width(stream)
        if self._tty:
            self._refresh_rate = self._tty_refresh_rate
        else:
            every = self.file_refresh_rate or int(getattr(trainer, "log_every_n_steps", 50) or 50)
            self._refresh_rate = max(1, every)
        total = self.total_steps(trainer)
        if total is None:
            bar_format = _OPEN_FORMAT
        else:
            bar_format = _TTY_FORMAT if self._tty else _FILE_FORMAT
        start = int(trainer.global_step)  # a resumed run starts at its step
        self._last_n = start
        return _StepTqdm(
            total=total,
            initial=start,
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=self._tty,
            file=stream if self._tty else _Lines(stream),
            smoothing=0,  # the average since the start: validation pauses are part of the run
            bar_format=bar_format,
        )

    @staticmethod
    def total_steps(trainer: pl.Trainer) -> int | None:
        """The optimizer step the run ends at: ``max_steps``, else as many as the epochs give."""
        if trainer.max_steps is not None and trainer.max_steps > 0:
            return int(trainer.max_steps)
        total = trainer.estimated_stepping_batches
        return int(total) if math.isfinite(total) else None

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, str]:
        known = trainer.progress_bar_metrics
        return {key: f"{float(known[key]):.4g}" for key in self.metrics if key in known}

    def _show(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *, force: bool) -> None:
        bar = self._train_progress_bar
        if bar is None or bar.disable:
            return
        n = int(trainer.global_step)
        # Several batches share a step under gradient accumulation: one update per step.
        if not force and (n == self._last_n or not self._should_update(n, bar.total)):
            return
        self._last_n = n
        bar.n = n
        bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
        bar.refresh()
        self._shown = (n, bar.postfix)

    # --- Lightning hooks ------------------------------------------------------

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        pass  # one bar for the whole run: nothing restarts with an epoch

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._show(trainer, pl_module, force=False)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pass  # epochs are not shown

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.val_progress_bar.close()
        self.reset_dataloader_idx_tracker()
        bar = self._train_progress_bar
        if bar is None or bar.disable or trainer.sanity_checking:
            return
        # The new val/loss: redrawn at once on a terminal; a log file gets it on its next line.
        bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=self._tty)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        bar = self._train_progress_bar
        if bar is not None and not bar.disable:
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            if (int(trainer.global_step), bar.postfix) != self._shown:  # e.g. the final val/loss
                self._show(trainer, pl_module, force=True)
            # A log file has its last line already; tqdm would write it again on close.
            bar.leave = self._tty
        super().on_train_end(trainer, pl_module)
