"""LightningModule: trains a TransformerNet against the perceptual loss.

Johnson et al. 2016, section 3: the transformer is trained with Adam (lr 1e-3)
to minimize the weighted content, style and total-variation losses measured by a
frozen VGG-16; the style targets come from one style image. With several style
images one network learns them all (Dumoulin et al. 2017, conditional instance
normalization): each batch is trained for one style, in a shuffled cycle.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from .errors import ConfigError, NonFiniteLossError
from .inference import bf16_emulation_warning, native_bf16
from .loss import PerceptualLoss
from .model import TransformerNet

log = logging.getLogger(__name__)
# Checkpoint keys of the frozen VGG: left out of checkpoints (they are the same
# weights every run and would add 30-60 MB to each file).
_VGG_PREFIX = "loss_net.vgg."
LR_SCALING = ("none", "linear", "sqrt")
# No scheduler: a constant lr, still a scheduler so that LearningRateMonitor logs it as opt/lr.
_CONSTANT_LR = {"_target_": "torch.optim.lr_scheduler.ConstantLR", "factor": 1.0, "total_iters": 0}


class StyleTransferModule(pl.LightningModule):
    """The transformer (trained) and the perceptual loss network (frozen): the math only.

    Side jobs (TensorBoard image panels, learning rate, throughput, the model
    file and the preview) are callbacks (``callbacks.py``, ``configs/callbacks/``).
    Arguments are plain values, stored in checkpoints as hyperparameters (they
    load with ``torch.load(weights_only=True)``) and shown in TensorBoard:

    - ``model``: TransformerNet keyword arguments; ``loss``: PerceptualLoss
      keyword arguments except the style image;
    - ``style_images``: the paintings, decoded ((3, H, W) uint8 each; not a
      hyperparameter), named by ``style_names`` (several: a multi-style network,
      Dumoulin et al. 2017) and recorded with ``style_sources`` (their files);
    - ``optimizer``, ``scheduler``: ``_target_`` dicts instantiated in
      ``configure_optimizers`` (``configs/module/default.yaml``); a scheduler's
      ``T_max: null`` is the run's number of optimizer steps;
    - ``lr_scaling``: ``rule`` (none, linear, sqrt), ``reference_batch`` and
      ``batch_size``: scale the lr for the effective batch (x devices x nodes);
    - ``seed``: the order of the styles over the training steps;
    - ``nan_policy``: on a NaN/inf loss ``stop`` with an error or ``skip`` the
      batch (single device only);
    - ``style_warmup_steps``: ramp the style term in over that many steps;
    - ``init_from``: where the transformer's weights started (``warm_start.py``
      loads them; recorded here for the model file and its card), None: random;
    - speed switches (same math, see docs/benchmarks.md): ``channels_last``
      memory format for both networks, ``compile`` the training computation with
      ``torch.compile``; each True, False or ``"auto"``: on when training on CUDA
      (where both pay), off on CPUs (where compiling takes minutes for little).
    """

    def __init__(
        self,
        *,
        model: Mapping[str, Any],
        loss: Mapping[str, Any],
        style_images: Sequence[torch.Tensor],
        style_names: Sequence[str],
        style_sources: Sequence[str] = (),
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        lr_scaling: Mapping[str, Any] | None = None,
        seed: int = 0,
        nan_policy: str = "stop",
        channels_last: bool | str = False,
        compile: bool | str = False,
        style_warmup_steps: int = 0,
        init_from: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["style_images"])
        self.channels_last = _switch("channels_last", channels_last)  # checked before any work
        self.compile = _switch("compile", compile)
        if len(style_names) != len(style_images):
            raise ConfigError(f"{len(style_images)} style images but {len(style_names)} names")
        _check_choice("module.nan_policy", nan_policy, ("stop", "skip"))
        _check_choice("optim.lr_scaling", (lr_scaling or {}).get("rule", "none"), LR_SCALING)
        if float(optimizer.get("lr", 1.0)) <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {optimizer['lr']}")
        if int(style_warmup_steps) < 0:
            raise ConfigError(f"module.style_warmup_steps must be >= 0, got {style_warmup_steps}")
        self.style_images = [image.cpu() for image in style_images]  # (3, H, W) uint8 each
        self.style_names = [str(name) for name in style_names]
        self.num_styles = len(self.style_images)
        try:  # model.py raises plain ValueErrors (it imports only torch)
            self.transformer = TransformerNet(**{**dict(model), "num_styles": self.num_styles})
        except ValueError as e:
            raise ConfigError(f"model: {e}") from None
        targets = [image.float() for image in self.style_images]
        self.loss_net = PerceptualLoss(
            style_image=targets[0] if self.num_styles == 1 else targets, **dict(loss)
        )
        self.seed = int(seed)
        self.nan_policy = nan_policy
        self.style_warmup_steps = int(style_warmup_steps)
        self._skipped_nan = 0
        # The function that maps a uint8 batch to (losses, output); setup() swaps
        # in a compiled version. Kept out of the module tree, so that checkpoints
        # keep their plain parameter names.
        self._compute_fn = self._compute
        self._skipped_images: torch.Tensor | int = 0  # this epoch's, summed on the device
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
        if not logs_this_step(self.trainer):
            return losses["total"]
        # Only at the steps Lightning writes to the loggers: each self.log call
        # costs CPU time (docs/benchmarks.md), 10 of them a step, and the NaN check
        # above has just synchronized with the GPU, which waits meanwhile.
        self.log("loss/total", losses["total"], prog_bar=True, batch_size=bs)
        for key in ("content", "style", "tv", "grid"):
            if key in losses:  # grid: only with loss.grid_weight > 0
                self.log(f"loss/{key}", losses[key], batch_size=bs)
        for key, value in losses.items():
            if key.startswith("style/"):
                self.log(f"style_layers/{key[6:]}", value, batch_size=bs)
        if self.num_styles > 1:
            self._log_style_loss(self.style_names[k], losses["style"])
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
        total = losses["content"] + style + losses["tv"]
        if "grid" in losses:
            total = total + losses["grid"]
        return {**losses, "style": style, "total": total}

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

    def on_validation_epoch_start(self) -> None:
        self._val_sums, self._val_count = {}, 0

    def validation_step(self, batch, batch_idx: int) -> dict[str, Any]:
        """Losses of every validation photo in every style.

        Returns ``loss`` and ``stylized``: one (B, 3, S, S) output per style,
        which the sample panel callback shows.
        """
        # Every validation photo in every style; val/loss is the mean over styles.
        # Eager: a few batches every val_check_interval steps are not worth a
        # second compilation (no_grad and a smaller last batch change the graph).
        runs = [self._losses(batch, self._style_arg(k), eager=True) for k in range(self.num_styles)]
        bs = batch[0].shape[0]
        parts = [key for key in ("content", "style", "tv", "grid") if key in runs[0][0]]
        losses = {key: sum(run[0][key] for run in runs) / len(runs) for key in ("total", *parts)}
        values = {"val/loss": losses["total"]}
        values.update({f"val/{key}": losses[key] for key in parts})
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
        return {"loss": losses["total"], "stylized": [output for _, output in runs]}

    def on_validation_epoch_end(self) -> None:
        # The sanity check before training shows the untrained network (step 0)
        # when it saw every validation photo; else neither values nor panels
        # (callbacks.SamplePanels) are written, so that both always come from the
        # same photos at the same steps.
        if validation_is_complete(self.trainer):
            self._log_val_values()

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

    def effective_lr(self) -> float:
        """The optimizer's ``lr`` scaled for the effective batch (batch x devices x nodes).

        ``lr_scaling.rule``: ``none`` keeps ``lr``; ``linear`` / ``sqrt`` scale it by
        (effective batch / ``reference_batch``) or its square root.
        """
        lr = float(self.hparams.optimizer["lr"])
        scaling = self.hparams.lr_scaling or {}
        rule = scaling.get("rule", "none")
        if rule == "none":
            return lr
        batch = int(scaling["batch_size"]) * self.trainer.world_size
        ratio = batch / float(scaling.get("reference_batch", 4))
        return lr * (ratio if rule == "linear" else math.sqrt(ratio))

    def configure_optimizers(self) -> dict[str, Any]:
        opt = instantiate(
            self.hparams.optimizer, params=self.transformer.parameters(), lr=self.effective_lr()
        )
        scheduler = dict(self.hparams.scheduler or _CONSTANT_LR)
        if scheduler.get("T_max", 0) is None:  # e.g. cosine to zero at the last step
            total = self.trainer.estimated_stepping_batches
            if not math.isfinite(total):
                raise ConfigError("optim.scheduler=cosine needs trainer.max_steps or max_epochs")
            scheduler["T_max"] = max(1, int(total))
        # Stepped every optimizer step; the name is the lr's TensorBoard tag
        # (LearningRateMonitor in configs/callbacks).
        sched = {"scheduler": instantiate(scheduler, optimizer=opt), "interval": "step"}
        return {"optimizer": opt, "lr_scheduler": {**sched, "name": "opt/lr"}}

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


def auto_precision(accelerator: str = "auto") -> str:
    """bf16 autocast where the GPU supports it (Ampere and newer), else fp32.

    CPUs stay fp32 even with native bf16: bf16 training there ended 8.6% above
    fp32 in the quality check of docs/benchmarks.md.
    """
    if accelerator == "cpu":
        return "32-true"
    return "bf16-mixed" if native_bf16(torch.device("cuda")) else "32-true"


def training_precision(precision: str, accelerator: str = "auto") -> str:
    """``trainer.precision`` with ``auto`` resolved; warns when a CPU would emulate bf16."""
    resolved = auto_precision(accelerator) if precision == "auto" else str(precision)
    on_cpu = accelerator == "cpu" or not torch.cuda.is_available()
    warning = bf16_emulation_warning(torch.device("cpu")) if on_cpu else None
    if warning and "bf16" in resolved:
        log.warning("trainer.precision=%s: %s", resolved, warning)
    return resolved


def logs_this_step(trainer: pl.Trainer, step: int | None = None) -> bool:
    """Whether Lightning writes the values of optimizer step ``step`` (0-based;
    default: the one being trained now, ``trainer.global_step``) to the loggers.

    It writes every ``log_every_n_steps`` steps; values logged at other steps are
    never written, so computing them is waste.
    """
    step = trainer.global_step if step is None else step
    return (step + 1) % max(1, trainer.log_every_n_steps) == 0 or bool(trainer.fast_dev_run)


def validation_is_complete(trainer: pl.Trainer) -> bool:
    """False during a sanity check that saw only part of the validation photos."""
    if not trainer.sanity_checking:
        return True
    return list(trainer.num_sanity_val_batches) == list(trainer.num_val_batches)


def _switch(name: str, value: bool | str) -> bool | str:
    """A speed switch: True, False or "auto" (decided in setup() by the device)."""
    if isinstance(value, bool) or value == "auto":
        return value
    raise ConfigError(f"module.{name} must be true, false or auto, got {value!r}")


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
