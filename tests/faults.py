"""Fault injection for the robustness tests: callbacks loaded by train.py via Hydra."""

import os
import signal

import pytorch_lightning as pl


class KillAtStep(pl.Callback):
    """SIGKILL this process right after training step ``step`` (no cleanup, no checkpoint).

    Runs before ModelCheckpoint at the same step (Lightning calls checkpoint
    callbacks last), so the newest checkpoint on disk is from an earlier step.
    """

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class MarkStep(pl.Callback):
    """Create the file ``path`` after training step ``step``: tells a test that
    training is under way (a fixed sleep is not enough on a loaded machine)."""

    def __init__(self, step: int, path: str):
        self.step = step
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step and not os.path.exists(self.path):
            open(self.path, "w").close()


class SignalAtStep(pl.Callback):
    """Send ``signum`` to this process after training step ``step`` (once)."""

    def __init__(self, step: int, signum: int):
        self.step = step
        self.signum = signum
        self.sent = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)
