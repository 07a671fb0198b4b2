"""LightningModule: trains a TransformerNet against the perceptual loss.

Johnson et al. 2016, section 3: the transformer is trained with Adam (lr 1e-3)
to minimize the weighted content, style and total-variation losses measured by a
frozen VGG-16; the style targets come from one style image.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from .image import load_image
from .inference import native_bf16
from .loss import PerceptualLoss
from .model import TransformerNet

# Checkpoint keys of the frozen VGG: left out of checkpoints (they are the same
# weights every run and would add 30-60 MB to each file).
_VGG_PREFIX = "loss_net.vgg."
SCHEDULERS = ("none", "cosine", "step")
# The frozen VGG is in eval mode on purpose; Lightning warns about it at fit start.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the step."""


class StyleTransferModule(pl.LightningModule):
    """The transformer (trained) and the perceptual loss network (frozen).

    Arguments are plain values so that they are stored in checkpoints as
    hyperparameters and shown in TensorBoard:
    ``model``: TransformerNet keyword arguments; ``loss``: PerceptualLoss keyword
    arguments except the style image; ``style_image``: path of the painting,
    resized so that its longer side is ``style_size`` (None: as is);
    ``optim``: ``lr``, ``betas``, ``weight_decay``, ``scheduler`` (none, cosine,
    step), ``step_size`` and ``gamma`` (for step); ``num_samples``: validation
    photos shown in the image panels; ``nan_policy``: on a NaN/inf loss ``stop``
    with an error or ``skip`` the batch (single device only). Speed switches (same math, see
    docs/benchmarks.md): ``channels_last`` memory format for both networks,
    ``compile`` the training computation with ``torch.compile``.
    """

    def __init__(
        self,
        *,
        model: Mapping[str, Any],
        loss: Mapping[str, Any],
        style_image: str,
        style_size: int | None = 256,
        style_name: str = "style",
        optim: Mapping[str, Any] | None = None,
        num_samples: int = 4,
        nan_policy: str = "stop",
        channels_last: bool = False,
        compile: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        style = load_image(style_image, max_side=style_size)  # (3, H, W) uint8; fails first
        self.transformer = TransformerNet(**dict(model))
        self.loss_net = PerceptualLoss(style_image=style.float(), **dict(loss))
        self.register_buffer("style_image", style, persistent=False)
        self.optim = {
            "lr": 1e-3,
            "betas": (0.9, 0.999),
            "weight_decay": 0.0,
            "scheduler": "none",
            "step_size": 10_000,
            "gamma": 0.5,
            **dict(optim or {}),
        }
        if self.optim["scheduler"] not in SCHEDULERS:
            raise ValueError(
                f"optim.scheduler must be one of {SCHEDULERS}, got {self.optim['scheduler']!r}"
            )
        if self.optim["lr"] <= 0:
            raise ValueError(f"optim.lr must be > 0, got {self.optim['lr']}")
        self.num_samples = int(num_samples)
        if nan_policy not in ("stop", "skip"):
            raise ValueError(f"nan_policy must be stop or skip, got {nan_policy!r}")
        self.nan_policy = nan_policy
        self._skipped_nan = 0
        self.channels_last = bool(channels_last)
        self.compile = bool(compile)
        # The function that maps a uint8 batch to (losses, output); setup() swaps
        # in a compiled version. Kept out of the module tree, so that checkpoints
        # keep their plain parameter names.
        self._compute_fn = self._compute
        self._last_batch_end: float | None = None
        self._samples: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB 0-255 -> stylized (B, 3, H, W) RGB ~0-255."""
        return self.transformer(x)

    def setup(self, stage: str) -> None:
        if self.channels_last:
            self.transformer.to(memory_format=torch.channels_last)
            self.loss_net.to(memory_format=torch.channels_last)
        if self.compile and self._compute_fn == self._compute:
            self._compute_fn = torch.compile(self._compute)

    def _compute(self, images: torch.Tensor) -> tuple[dict, torch.Tensor]:
        content = images.float()  # uint8 (B, 3, S, S) -> float 0-255
        if self.channels_last:
            content = content.contiguous(memory_format=torch.channels_last)
        output = self.transformer(content)
        return self.loss_net(output, content), output

    def _losses(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[dict, torch.Tensor]:
        return self._compute_fn(batch[0])

    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        losses, _ = self._losses(batch)
        bs = batch[0].shape[0]
        if not torch.isfinite(losses["total"]):
            # One device sync per step; a diverged run must not keep training
            # (Adam would turn every weight into NaN within a step).
            if self.nan_policy == "skip" and self.trainer.world_size == 1:
                self._skipped_nan += 1
                self.log("data/skipped_nan_batches", float(self._skipped_nan), batch_size=bs)
                return None  # Lightning skips the backward pass and the optimizer step
            raise NonFiniteLossError(
                f"loss is {losses['total'].item()} at step {self.global_step}; "
                "the last good checkpoint is in the checkpoints folder (resume with "
                "ckpt_path=last); lower optim.lr or the loss weights"
            )
        self.log("loss/total", losses["total"], prog_bar=True, batch_size=bs)
        for key in ("content", "style", "tv"):
            self.log(f"loss/{key}", losses[key], batch_size=bs)
        for key, value in losses.items():
            if key.startswith("style/"):
                self.log(f"style_layers/{key[6:]}", value, batch_size=bs)
        skipped = batch[1].sum()
        self.log(
            "data/skipped_images",
            skipped.float(),
            reduce_fx="sum",
            on_step=False,
            on_epoch=True,
            batch_size=bs,
        )
        self.log("opt/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=bs)
        return losses["total"]

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # Sustained throughput of all devices together: images per wall-clock
        # second between batch ends, including data loading, optimizer and logging.
        now = time.perf_counter()
        if self._last_batch_end is not None:
            images = batch[0].shape[0] * self.trainer.world_size
            dt = max(now - self._last_batch_end, 1e-9)
            self.log("perf/images_per_sec", images / dt, batch_size=1)
        self._last_batch_end = now

    def on_validation_epoch_start(self) -> None:
        self._samples = []

    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:
        losses, output = self._losses(batch)
        bs = batch[0].shape[0]
        self.log("val/loss", losses["total"], prog_bar=True, batch_size=bs, sync_dist=True)
        for key in ("content", "style", "tv"):
            self.log(f"val/{key}", losses[key], batch_size=bs, sync_dist=True)
        room = self.num_samples - sum(s.shape[0] for s in self._samples)
        if room > 0:
            pairs = torch.cat([batch[0].float(), output.float()], dim=3)[:room]  # (b, 3, S, 2S)
            self._samples.append(pairs.clamp(0, 255).detach().cpu())
        return losses["total"]

    def on_validation_epoch_end(self) -> None:
        self._last_batch_end = None  # validation time is not training throughput
        if not self._samples or not self.trainer.is_global_zero:
            return
        grid = sample_grid(self._samples)
        for writer in self._image_writers():
            writer.add_image("samples/content|stylized", grid / 255.0, self.global_step)

    def on_fit_start(self) -> None:
        if not self.trainer.is_global_zero:
            return
        for writer in self._image_writers():
            writer.add_image("style", self.style_image.cpu(), self.global_step)

    def _image_writers(self) -> list:
        """The loggers' writers that take images (TensorBoard's SummaryWriter)."""
        writers = [getattr(logger, "experiment", None) for logger in self.loggers]
        return [w for w in writers if hasattr(w, "add_image")]

    def effective_lr(self) -> float:
        """``optim.lr`` scaled for the effective batch (batch x devices x nodes).

        ``optim.lr_scaling``: ``none`` keeps ``lr``; ``linear`` / ``sqrt`` scale it
        by (effective batch / ``optim.reference_batch``) or its square root.
        """
        rule = self.optim.get("lr_scaling", "none")
        if rule == "none":
            return float(self.optim["lr"])
        datamodule = getattr(self.trainer, "datamodule", None)
        batch = getattr(datamodule, "batch_size", None)
        if batch is None:
            raise ValueError("optim.lr_scaling needs a datamodule with a batch_size")
        ratio = batch * self.trainer.world_size / float(self.optim.get("reference_batch", 4))
        if rule == "linear":
            return float(self.optim["lr"]) * ratio
        if rule == "sqrt":
            return float(self.optim["lr"]) * math.sqrt(ratio)
        raise ValueError(f"optim.lr_scaling must be none, linear or sqrt, got {rule!r}")

    def configure_optimizers(self):
        opt = torch.optim.Adam(
            self.transformer.parameters(),
            lr=self.effective_lr(),
            betas=tuple(self.optim["betas"]),
            weight_decay=self.optim["weight_decay"],
        )
        name = self.optim["scheduler"]
        if name == "none":
            return opt
        if name == "cosine":
            total = self.trainer.estimated_stepping_batches
            if not math.isfinite(total):
                raise ValueError("optim.scheduler=cosine needs trainer.max_steps or max_epochs")
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, int(total)))
        else:
            sched = torch.optim.lr_scheduler.StepLR(
                opt, step_size=int(self.optim["step_size"]), gamma=float(self.optim["gamma"])
            )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        sd = checkpoint["state_dict"]
        for key in [k for k in sd if k.startswith(_VGG_PREFIX)]:
            del sd[key]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Put back the frozen VGG weights that on_save_checkpoint left out.
        sd = checkpoint["state_dict"]
        for key, value in self.state_dict().items():
            if key.startswith(_VGG_PREFIX):
                sd.setdefault(key, value)


def auto_precision() -> str:
    """bf16 autocast where the GPU supports it (Ampere and newer), else fp32.

    CPUs stay fp32 even with native bf16: bf16 training there ended 8.6% above
    fp32 in the quality check of docs/benchmarks.md.
    """
    return "bf16-mixed" if native_bf16(torch.device("cuda")) else "32-true"


def sample_grid(samples: list[torch.Tensor]) -> torch.Tensor:
    """Stack (b, 3, S, 2S) content|stylized pairs into one (3, H, W) image, 0-255."""
    pairs = torch.cat(samples, dim=0)
    pad = 4
    padded = torch.nn.functional.pad(pairs, (pad, pad, pad, pad), value=255.0)
    return torch.cat(list(padded), dim=1)  # rows stacked vertically


@torch.no_grad()
def write_preview(transformer: TransformerNet, images: torch.Tensor, path) -> Path:
    """Stylize (n, 3, S, S) uint8 photos into one content|stylized JPEG at ``path``."""
    from .image import save_image

    device = next(transformer.parameters()).device
    was_training = transformer.training
    transformer.eval()
    output = transformer(images.to(device).float()).float().cpu()
    transformer.train(was_training)
    grid = sample_grid([torch.cat([images.float(), output.clamp(0, 255)], dim=3)])
    save_image(grid, path)
    return Path(path)
