"""LightningModule: trains a TransformerNet against the perceptual loss.

Johnson et al. 2016, section 3: the transformer is trained with Adam (lr 1e-3)
to minimize the weighted content, style and total-variation losses measured by a
frozen VGG-16; the style targets come from one style image. With several style
images one network learns them all (Dumoulin et al. 2017, conditional instance
normalization): each batch is trained for one style, in a shuffled cycle.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from .errors import NonFiniteLossError
from .image import load_image
from .inference import native_bf16
from .loss import PerceptualLoss
from .model import TransformerNet

# Checkpoint keys of the frozen VGG: left out of checkpoints (they are the same
# weights every run and would add 30-60 MB to each file).
_VGG_PREFIX = "loss_net.vgg."
SCHEDULERS = ("none", "cosine", "step")


class StyleTransferModule(pl.LightningModule):
    """The transformer (trained) and the perceptual loss network (frozen).

    Arguments are plain values so that they are stored in checkpoints as
    hyperparameters and shown in TensorBoard:
    ``model``: TransformerNet keyword arguments; ``loss``: PerceptualLoss keyword
    arguments except the style image; ``style_image``: path of the painting,
    resized so that its longer side is ``style_size`` (None: as is), or a list of
    paths for a multi-style network, named by the list ``style_name``;
    ``seed``: the order of the styles over the training steps;
    ``optim``: ``lr``, ``betas``, ``weight_decay``, ``scheduler`` (none, cosine,
    step), ``step_size`` and ``gamma`` (for step); ``num_samples``: validation
    photos shown in the image panels; ``nan_policy``: on a NaN/inf loss ``stop``
    with an error or ``skip`` the batch (single device only). Speed switches (same math, see
    docs/benchmarks.md): ``channels_last`` memory format for both networks,
    ``compile`` the training computation with ``torch.compile``; each True, False
    or ``"auto"``: on when training on CUDA (on an H100, bf16 + both: 2.05x the
    fp32 baseline, against 1.26x for bf16 alone), off on CPUs (compiling takes
    minutes there for about 20%).
    """

    def __init__(
        self,
        *,
        model: Mapping[str, Any],
        loss: Mapping[str, Any],
        style_image: str | Sequence[str],
        style_size: int | None = 256,
        style_name: str | Sequence[str] = "style",
        seed: int = 0,
        optim: Mapping[str, Any] | None = None,
        num_samples: int = 4,
        nan_policy: str = "stop",
        channels_last: bool | str = False,
        compile: bool | str = False,
        style_warmup_steps: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.channels_last = _switch("channels_last", channels_last)  # checked before any work
        self.compile = _switch("compile", compile)
        paths = [style_image] if isinstance(style_image, str) else list(style_image)
        names = [style_name] if isinstance(style_name, str) else list(style_name)
        if len(names) != len(paths):
            raise ValueError(f"{len(paths)} style images but {len(names)} style names")
        # (3, H, W) uint8 each, kept on the CPU for TensorBoard; bad files fail first.
        self.style_images = [load_image(path, max_side=style_size) for path in paths]
        self.style_names = names
        self.num_styles = len(paths)
        self.seed = int(seed)
        self.transformer = TransformerNet(**{**dict(model), "num_styles": self.num_styles})
        targets = [image.float() for image in self.style_images]
        self.loss_net = PerceptualLoss(
            style_image=targets[0] if self.num_styles == 1 else targets, **dict(loss)
        )
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
        if int(style_warmup_steps) < 0:
            raise ValueError(f"module.style_warmup_steps must be >= 0, got {style_warmup_steps}")
        self.style_warmup_steps = int(style_warmup_steps)
        self._skipped_nan = 0
        # The function that maps a uint8 batch to (losses, output); setup() swaps
        # in a compiled version. Kept out of the module tree, so that checkpoints
        # keep their plain parameter names.
        self._compute_fn = self._compute
        self._last_batch_end: float | None = None  # start of the throughput window
        self._images_since = 0
        self._skipped_images: torch.Tensor | int = 0  # this epoch's, summed on the device
        self._samples: list[list[torch.Tensor]] = []  # per style: (b, 3, S, 2S) rows
        self._val_sums: dict[str, torch.Tensor] = {}  # tag -> sum of batch mean x batch size
        self._val_count = 0

    def forward(self, x: torch.Tensor, style: int | torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, H, W) RGB 0-255 -> stylized (B, 3, H, W) RGB ~0-255."""
        return self.transformer(x, style)

    def setup(self, stage: str) -> None:
        on_cuda = self._root_device().type == "cuda"
        if self.channels_last == "auto":
            self.channels_last = on_cuda
        if self.compile == "auto":
            self.compile = on_cuda
        if self.channels_last:
            self.transformer.to(memory_format=torch.channels_last)
            self.loss_net.to(memory_format=torch.channels_last)
        if self.compile and self._compute_fn == self._compute:
            self._compute_fn = torch.compile(self._compute)

    def _root_device(self) -> torch.device:
        """The device training runs on; setup() runs before Lightning moves the module."""
        try:
            return self.trainer.strategy.root_device
        except RuntimeError:  # no Trainer attached (scripts/benchmark.py, tests)
            return self.device

    def _compute(self, images: torch.Tensor, style: int | None = None) -> tuple[dict, torch.Tensor]:
        content = images.float()  # uint8 (B, 3, S, S) -> float 0-255
        if self.channels_last:
            content = content.contiguous(memory_format=torch.channels_last)
        output = self.transformer(content, style)
        return self.loss_net(output, content, style), output

    def _losses(
        self,
        batch: tuple[torch.Tensor, torch.Tensor],
        style: int | None = None,
        *,
        eager: bool = False,
    ) -> tuple[dict, torch.Tensor]:
        fn = self._compute if eager else self._compute_fn
        if style is None:  # one style: the plain call
            return fn(batch[0])
        return fn(batch[0], style)

    def _style_arg(self, k: int) -> int | None:
        """The ``style`` argument for style ``k``: None for a single-style network."""
        return k if self.num_styles > 1 else None

    def style_of_step(self, step: int) -> int:
        """The style trained at optimizer step ``step``.

        Each round of N steps visits every style once, in an order shuffled per
        round (seeded by ``seed``): the styles get equal training, and the style
        at the steps that get logged (every ``log_every_n_steps``) varies. It is a
        function of the step only, so every DDP rank trains the same style and a
        resumed run continues the same sequence.
        """
        n = self.num_styles
        if n == 1:
            return 0
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step // n)
        return int(torch.randperm(n, generator=gen)[step % n])

    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        k = self.style_of_step(self.global_step)
        losses, _ = self._losses(batch, self._style_arg(k))
        losses = self._warm_up(losses)
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
        self._skipped_images = self._skipped_images + batch[1].sum()  # on the device: no sync
        if not self._logs_this_step():
            return losses["total"]
        # Only at the steps Lightning writes to the loggers: each self.log call
        # costs ~0.7 ms of CPU (docs/benchmarks.md), 10 of them a step, and the NaN
        # check above has just synchronized with the GPU, which waits meanwhile.
        self.log("loss/total", losses["total"], prog_bar=True, batch_size=bs)
        for key in ("content", "style", "tv"):
            self.log(f"loss/{key}", losses[key], batch_size=bs)
        for key, value in losses.items():
            if key.startswith("style/"):
                self.log(f"style_layers/{key[6:]}", value, batch_size=bs)
        if self.num_styles > 1:
            self._log_style_loss(self.style_names[k], losses["style"])
        self.log("opt/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=bs)
        return losses["total"]

    def _warm_up(self, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Ramp the style term linearly from 0 to its weight over ``style_warmup_steps``.

        From scratch, the network learns the painting's texture first and the
        photo's structure only slowly (the content loss stays near that of a flat
        gray image for hundreds of steps). Starting from the content loss alone
        teaches it to reproduce the photo first, which a short run (the quick
        start) needs; docs/training.md has the comparison. Validation always uses
        the full weights, so ``val/loss`` stays comparable across runs.
        """
        if self.global_step >= self.style_warmup_steps:
            return losses
        ramp = self.global_step / self.style_warmup_steps
        style = losses["style"] * ramp
        return {**losses, "style": style, "total": losses["content"] + style + losses["tv"]}

    def _logs_this_step(self) -> bool:
        """Whether Lightning writes this step's values to the loggers (every
        ``log_every_n_steps`` steps, and the last); values logged at other steps
        are never written."""
        try:
            connector = self.trainer._logger_connector
            return bool(connector.should_update_logs or self.trainer.fast_dev_run)
        except AttributeError:  # a Lightning without this (private) property
            return True

    def on_train_epoch_end(self) -> None:
        # Unreadable photos replaced by others in this epoch (data.py), one sync.
        if isinstance(self._skipped_images, torch.Tensor):
            total = self._skipped_images.float()
            self.log("data/skipped_images", total, on_step=False, on_epoch=True, batch_size=1)
        self._skipped_images = 0

    def _log_style_loss(self, name: str, value: torch.Tensor) -> None:
        """``style_loss/<name>``: the style loss of a batch trained for that style.

        Written to the loggers directly: a key given to ``self.log`` at some
        steps only would be logged again, with its stale value, at the steps of
        the other styles.
        """
        for logger in self.loggers:  # called at the logging steps only
            logger.log_metrics({f"style_loss/{name}": float(value.detach())}, step=self.global_step)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # Sustained throughput of all devices together: images per wall-clock
        # second since the last logged step (or the end of validation), including
        # data loading, optimizer and logging.
        now = time.perf_counter()
        if self._last_batch_end is None:  # the first step, or the first after validation
            self._last_batch_end, self._images_since = now, 0
            return
        self._images_since += batch[0].shape[0] * self.trainer.world_size
        if self._logs_this_step():
            rate = self._images_since / max(now - self._last_batch_end, 1e-9)
            self.log("perf/images_per_sec", rate, batch_size=1)
            self._last_batch_end, self._images_since = now, 0

    def on_validation_epoch_start(self) -> None:
        self._samples = [[] for _ in range(self.num_styles)]  # per style
        self._val_sums, self._val_count = {}, 0

    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:
        # Every validation photo in every style; val/loss is the mean over styles.
        # Eager: a few batches every val_check_interval steps are not worth a
        # second compilation (no_grad and a smaller last batch change the graph).
        runs = [self._losses(batch, self._style_arg(k), eager=True) for k in range(self.num_styles)]
        bs = batch[0].shape[0]
        losses = {
            key: sum(run[0][key] for run in runs) / len(runs)
            for key in ("total", "content", "style", "tv")
        }
        values = {"val/loss": losses["total"]}
        values.update({f"val/{key}": losses[key] for key in ("content", "style", "tv")})
        if self.num_styles > 1:
            for k, (style_losses, _) in enumerate(runs):
                name = self.style_names[k]
                values[f"val/loss/{name}"] = style_losses["total"]
                values[f"val/style_loss/{name}"] = style_losses["style"]
        for tag, value in values.items():
            # For checkpoint selection and the progress bar; the loggers get the
            # values from on_validation_epoch_end, at the step of the image panels
            # (Lightning would write them one step earlier, and never at step 0).
            prog_bar = tag == "val/loss"
            self.log(tag, value, prog_bar=prog_bar, logger=False, batch_size=bs, sync_dist=True)
            self._val_sums[tag] = self._val_sums.get(tag, 0) + value.detach().float() * bs
        self._val_count += bs
        for k, (_, output) in enumerate(runs):
            room = self.num_samples - sum(s.shape[0] for s in self._samples[k])
            if room > 0:
                pairs = torch.cat([batch[0].float(), output.float()], dim=3)[:room]  # (b, 3, S, 2S)
                self._samples[k].append(pairs.clamp(0, 255).detach().cpu())
        return losses["total"]

    def on_validation_epoch_end(self) -> None:
        self._last_batch_end = None  # validation time is not training throughput
        # The sanity check before training shows the untrained network (step 0),
        # when it saw every validation photo; else neither values nor panels are
        # written, so that both always come from the same photos at the same steps.
        if self.trainer.sanity_checking and not self._sanity_check_is_complete():
            return
        self._log_val_values()
        if not self.trainer.is_global_zero:
            return
        for k, samples in enumerate(self._samples):
            if not samples:
                continue
            grid = sample_grid(samples)
            what = "stylized" if self.num_styles == 1 else self.style_names[k]
            for writer in self._image_writers():
                writer.add_image(f"samples/content|{what}", grid / 255.0, self.global_step)

    def _sanity_check_is_complete(self) -> bool:
        trainer = self.trainer
        return list(trainer.num_sanity_val_batches) == list(trainer.num_val_batches)

    def _log_val_values(self) -> None:
        """Write the validation values (means over all photos and processes) at this step."""
        if not self._val_sums or not self._val_count:
            return
        tags = list(self._val_sums)
        sums = torch.stack([torch.as_tensor(self._val_sums[t]).to(self.device) for t in tags])
        totals = torch.cat([sums, torch.tensor([float(self._val_count)], device=self.device)])
        totals = self.trainer.strategy.reduce(totals, reduce_op="sum")  # all ranks take part
        means = {tag: float(totals[i] / totals[-1]) for i, tag in enumerate(tags)}
        for logger in self.loggers:  # rank 0 writes
            logger.log_metrics(means, step=self.global_step)

    def on_fit_start(self) -> None:
        if not self.trainer.is_global_zero:
            return
        for writer in self._image_writers():
            for name, image in zip(self.style_names, self.style_images, strict=True):
                tag = "style" if self.num_styles == 1 else f"style/{name}"
                writer.add_image(tag, image, self.global_step)

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
    """Stack (b, 3, S, kS) rows (content|stylized...) into one (3, H, W) image, 0-255."""
    pairs = torch.cat(samples, dim=0)
    pad = 4
    padded = torch.nn.functional.pad(pairs, (pad, pad, pad, pad), value=255.0)
    return torch.cat(list(padded), dim=1)  # rows stacked vertically


@torch.no_grad()
def write_preview(transformer: TransformerNet, images: torch.Tensor, path) -> Path:
    """Stylize (n, 3, S, S) uint8 photos into one content|stylized JPEG at ``path``.

    A multi-style network gets one column per style: content|style 0|style 1|...
    """
    from .image import save_image

    device = next(transformer.parameters()).device
    was_training = transformer.training
    transformer.eval()
    x = images.to(device).float()
    styles = [None] if transformer.num_styles == 1 else range(transformer.num_styles)
    outputs = [transformer(x, k).float().cpu().clamp(0, 255) for k in styles]
    transformer.train(was_training)
    grid = sample_grid([torch.cat([images.float(), *outputs], dim=3)])
    save_image(grid, path)
    return Path(path)


def _switch(name: str, value: bool | str) -> bool | str:
    """A speed switch: True, False or "auto" (decided in setup() by the device)."""
    if isinstance(value, bool) or value == "auto":
        return value
    raise ValueError(f"module.{name} must be true, false or auto, got {value!r}")
