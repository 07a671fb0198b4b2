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
