"""A test-only Lightning callback: each rank saves its transformer weights at the end."""

from pathlib import Path

import pytorch_lightning as pl
import torch


class ParamDump(pl.Callback):
    def __init__(self, *, folder: str):
        self.folder = Path(folder)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in pl_module.transformer.state_dict().items()}
        torch.save(
            {"rank": trainer.global_rank, "world": trainer.world_size, "state": state},
            self.folder / f"rank{trainer.global_rank}.pt",
        )
