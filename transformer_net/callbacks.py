"""Lightning callbacks: the side jobs of a training run (``configs/callbacks/default.yaml``).

- ``FinalCheckpoint`` and ``CheckpointOnInterrupt``: ``last.ckpt`` at the end of
  training, and when it stops on SIGTERM or Ctrl-C. Clusters preempt jobs with
  SIGTERM (SLURM, Kubernetes) and people press Ctrl-C: either way the state at
  the last finished step is saved so that ``ckpt_path=last`` continues from there
  instead of from the last periodic checkpoint.
- ``ExportModelFile`` and ``WritePreview``: the model file for ``stylize.py`` and
  a content|stylized JPEG, written by rank 0 when training ends (so DDP,
  interrupted and resumed runs all go through one path).
- ``WriteModelFolder``: the same model as a folder to share (``model_folder.py``:
  safetensors, config.json, model card), from the model file and the preview.
- ``SamplePanels``: TensorBoard image panels (the paintings, and validation
  photos content|stylized at every validation).
- ``ImagesPerSecond``: training throughput of all devices together.
- ``TimedSnapshots``: model files at marks of training time, for comparing
  recipes at equal wall-clock time.
- ``NextSteps``: what the run wrote and the commands that use it, at the end.
- ``ModelSummary``: Lightning's table without its always-zero FLOPs.

The progress bar is in ``progress.py``.
"""

from __future__ import annotations

import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.model_summary import get_human_readable_count
from torchvision.utils import make_grid

from .checkpoint import read_model_file, save_model_file
from .console import next_steps
from .errors import NonFiniteLossError
from .image import save_image, style_thumbnail, to_uint8
from .model_folder import DEFAULT_LICENSE, save_model_folder
from .module import StyleTransferModule, logs_this_step, validation_is_complete

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


class FinalCheckpoint(pl.Callback):
    """Save ``<dirpath>/<filename>`` with the optimizer state when training ends.

    ModelCheckpoint saves every N steps only; this is the final state, so that
    ``ckpt_path=last`` with a larger ``trainer.max_steps`` extends the run. Every
    rank takes part (Lightning writes on rank 0).
    """

    def __init__(self, *, dirpath: str, filename: str = "last.ckpt"):
        self.path = Path(dirpath) / filename

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)


class ExportModelFile(pl.Callback):
    """Write the trained network as a model file (``stylize.py --model``) when training ends.

    Its metadata names the run (``name``), the styles by index and their image
    files, small JPEG thumbnails of the paintings, the training step, crop size,
    loss settings (``evaluate.py`` rebuilds the loss from them) and the last
    logged losses. Weights with NaN/inf are refused: no model file is better
    than one that paints black. ``path`` is set once written.
    """

    def __init__(self, *, path: str, name: str):
        self.target = Path(path)
        self.name = name
        self.path: Path | None = None

    @rank_zero_only
    def on_train_end(self, trainer: pl.Trainer, pl_module: StyleTransferModule) -> None:
        if not all(torch.isfinite(p).all() for p in pl_module.transformer.parameters()):
            raise NonFiniteLossError("the trained weights contain NaN/inf: no model file written")
        meta = model_meta(trainer, pl_module, self.name)
        self.path = save_model_file(pl_module.transformer, self.target, meta=meta)


def model_meta(trainer: pl.Trainer, pl_module: StyleTransferModule, name: str) -> dict:
    """The metadata of a model file written now: the run's name, its styles, step,
    crop size, loss settings, warm start and last logged losses."""
    hparams = pl_module.hparams
    sources = [str(source) for source in hparams.get("style_sources") or ()]
    multi = pl_module.num_styles > 1
    return {
        "style": name,
        "styles": list(pl_module.style_names),  # by index: stylize.py --style-index
        **({"style_images": sources} if multi else {"style_image": sources[0]}),
        "global_step": int(trainer.global_step),
        "image_size": int(getattr(trainer.datamodule, "image_size", 0)) or None,
        "loss": dict(hparams["loss"]),
        # Where the weights started (init_from=; warm_start.py), None: random.
        "init_from": hparams.get("init_from"),
        # The last logged values (train/*, val/*): how good it got, for --info and cards.
        "metrics": {
            k: float(v)
            for k, v in sorted(trainer.callback_metrics.items())
            if torch.is_tensor(v) and v.numel() == 1 and torch.isfinite(v)
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        # The paintings travel with the model (galleries, model cards): the
        # paths above mean nothing on another machine. JPEG bytes, ~10 kB each.
        "style_thumbnails": [style_thumbnail(image) for image in pl_module.style_images],
    }


class TimedSnapshots(pl.Callback):
    """Model files at marks of training time, then stop: recipes compared at equal time.

    ``minutes``: the marks, in minutes of training (validation and the snapshots'
    own writing excluded, so a run that validates more often is not penalized).
    At each mark the network is written as ``<dirpath>/minutes=<M>.pth`` with
    ``train_seconds`` and ``global_step`` in its metadata; after the last mark the
    run stops (``stop``) as if it had reached ``max_steps``: the model file, preview
    and last checkpoint are written as usual. A run that ends before its last mark
    (``max_steps``) also writes ``final.pth``, its network at the end, with the same
    metadata. Used by ``scripts/time_to_quality.py``.
    """

    def __init__(self, *, dirpath: str, minutes: list[float], name: str, stop: bool = True):
        marks = sorted(float(m) for m in minutes)
        if not marks or marks[0] <= 0:
            raise ValueError(f"minutes must be positive, got {minutes!r}")
        self.dirpath = Path(dirpath)
        self.marks = marks
        self.name = name
        self.stop = stop
        self._start: float | None = None
        self._paused = 0.0
        self._pause_start: float | None = None

    def training_seconds(self) -> float:
        if self._start is None:
            return 0.0
        return time.perf_counter() - self._start - self._paused

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start, self._paused = time.perf_counter(), 0.0

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pause_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pause_start is not None and self._start is not None:
            self._paused += time.perf_counter() - self._pause_start
        self._pause_start = None

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: StyleTransferModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        seconds = self.training_seconds()
        while self.marks and seconds >= self.marks[0] * 60:
            started = time.perf_counter()
            self._snapshot(trainer, pl_module, f"minutes={self.marks.pop(0):g}.pth", seconds)
            self._paused += time.perf_counter() - started
        if not self.marks and self.stop:
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: StyleTransferModule) -> None:
        if self.marks:  # ended before its last mark
            self._snapshot(trainer, pl_module, "final.pth", self.training_seconds())

    def _snapshot(
        self, trainer: pl.Trainer, pl_module: StyleTransferModule, name: str, seconds: float
    ) -> None:
        if trainer.is_global_zero:
            meta = {**model_meta(trainer, pl_module, self.name), "train_seconds": seconds}
            save_model_file(pl_module.transformer, self.dirpath / name, meta=meta)


class WritePreview(pl.Callback):
    """Stylize ``count`` validation photos into one content|stylized JPEG when training ends.

    A multi-style network gets one column per style: content|style 0|style 1|...
    ``path`` is set once written.
    """

    def __init__(self, *, path: str, count: int = 4):
        self.target = Path(path)
        self.count = count
        self.path: Path | None = None

    @rank_zero_only
    @torch.no_grad()
    def on_train_end(self, trainer: pl.Trainer, pl_module: StyleTransferModule) -> None:
        photos = trainer.datamodule.preview_images(self.count)  # (n, 3, S, S) uint8
        transformer = pl_module.transformer
        was_training = transformer.training
        transformer.eval()
        x = photos.to(pl_module.device).float()
        styles = [None] if pl_module.num_styles == 1 else range(pl_module.num_styles)
        outputs = [transformer(x, k).float().cpu() for k in styles]  # (n, 3, S, S) each
        transformer.train(was_training)
        save_image(panel_grid(torch.cat([photos.float(), *outputs], dim=3)), self.target)
        self.path = self.target


class WriteModelFolder(pl.Callback):
    """Write the trained model as a model folder to share (``model_folder.py``) when training
    ends: the written model file's tensors and metadata, the preview as the sample sheet,
    and the training command, batch size and images seen in config.json and the card.

    Put it after ``ExportModelFile`` and ``WritePreview``: it reuses their files (without
    a model file there is nothing to write). ``license``: the Hub's licence id for the
    weights. ``path`` is set once written.
    """

    def __init__(self, *, path: str, license: str = DEFAULT_LICENSE):
        self.target = Path(path)
        self.license = license
        self.path: Path | None = None

    @rank_zero_only
    def on_train_end(self, trainer: pl.Trainer, pl_module: StyleTransferModule) -> None:
        model_file = written(trainer, ExportModelFile)
        if model_file is None:
            return
        args, state_dict, meta = read_model_file(model_file)
        batch_size = getattr(trainer.datamodule, "batch_size", None)
        training = {
            "command": training_command(),
            "batch_size": int(batch_size) if batch_size else None,
            "devices": int(trainer.world_size),
            "accumulate_grad_batches": int(trainer.accumulate_grad_batches),
        }
        # The run's own folder: replaced when a resumed run ends again.
        self.path = save_model_folder(
            (args, state_dict, meta),
            self.target,
            license=self.license,
            sample_sheet=written(trainer, WritePreview),
            training=training,
            overwrite=True,
        )


def training_command() -> str | None:
    """The command that trained this run: Hydra's overrides, else ``sys.argv`` of train.py
    (None when neither says, e.g. ``train(cfg)`` called from Python)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        overrides = list(HydraConfig.get().overrides.task)
        return shlex.join(["python", "train.py", *overrides])
    if Path(sys.argv[0]).name == "train.py":
        return shlex.join(["python", "train.py", *sys.argv[1:]])
    return None


def panel_grid(rows: torch.Tensor) -> torch.Tensor:
    """(n, 3, S, kS) rows (content|stylized...) 0-255 -> one (3, H, W) uint8 image, white gaps."""
    return to_uint8(make_grid(rows.clamp(0, 255), nrow=1, padding=4, pad_value=255.0))


class SamplePanels(pl.Callback):
    """TensorBoard images: the paintings (``style``) at the start, then at every
    validation the first ``num_samples`` validation photos content|stylized
    (``samples/content|stylized``; per style for a multi-style network).

    Values and panels are written at the same steps, step 0 included (the
    sanity check shows the untrained network when it saw every photo).
    """

    def __init__(self, *, num_samples: int = 4):
        self.num_samples = int(num_samples)
        self._rows: list[list[torch.Tensor]] = []  # per style: (b, 3, S, 2S) on the CPU

    @rank_zero_only
    def on_fit_start(self, trainer: pl.Trainer, pl_module: StyleTransferModule) -> None:
        for writer in _image_writers(trainer):
            for name, image in zip(pl_module.style_names, pl_module.style_images, strict=True):
                tag = "style" if pl_module.num_styles == 1 else f"style/{name}"
                writer.add_image(tag, image, trainer.global_step)

    def on_validation_epoch_start(
        self, trainer: pl.Trainer, pl_module: StyleTransferModule
    ) -> None:
        self._rows = [[] for _ in range(pl_module.num_styles)]

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: StyleTransferModule,
        outputs: dict[str, Any],
        batch: tuple[torch.Tensor, torch.Tensor],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.is_global_zero:
            return
        for rows, stylized in zip(self._rows, outputs["stylized"], strict=True):
            room = self.num_samples - sum(r.shape[0] for r in rows)
            if room > 0:  # (b, 3, S, 2S): the photo and its stylized version side by side
                pair = torch.cat([batch[0][:room].float(), stylized[:room].float()], dim=3)
                rows.append(pair.detach().cpu())

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: StyleTransferModule) -> None:
        if not trainer.is_global_zero or not validation_is_complete(trainer):
            return
        for k, rows in enumerate(self._rows):
            if not rows:
                continue
            what = "stylized" if pl_module.num_styles == 1 else pl_module.style_names[k]
            grid = panel_grid(torch.cat(rows))
            for writer in _image_writers(trainer):
                writer.add_image(f"samples/content|{what}", grid, trainer.global_step)


def _image_writers(trainer: pl.Trainer) -> list:
    """TensorBoard's SummaryWriters of the run (the loggers that take images)."""
    return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


class ImagesPerSecond(pl.Callback):
    """``perf/images_per_sec``: training images of all devices per wall-clock second.

    Measured between the steps Lightning logs (and from the end of validation),
    so it includes data loading, the optimizer and logging, without a device
    synchronization of its own. Lightning's ThroughputMonitor synchronizes CUDA
    every step (stalling the GPU's queue) and counts one device's samples.
    """

    def __init__(self) -> None:
        self._since: float | None = None  # start of the window
        self._images = 0

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        now = time.perf_counter()
        if self._since is None:  # the first step, or the first after validation
            self._since, self._images = now, 0
            return
        self._images += batch[0].shape[0] * trainer.world_size
        # after the step: global_step has advanced, so ask about the step just done
        if logs_this_step(trainer, trainer.global_step - 1):
            rate = self._images / max(now - self._since, 1e-9)
            pl_module.log("perf/images_per_sec", rate, batch_size=1)
            self._since, self._images = now, 0

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._since = None  # validation time is not training throughput


class NextSteps(pl.Callback):
    """Print (stdout, rank 0) what the run wrote and the commands that use it, when it ends.

    Put it after ``ExportModelFile`` and ``WritePreview``: it names their files.
    """

    def __init__(self) -> None:
        self._started = time.monotonic()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.monotonic()

    @rank_zero_only
    def on_train_end(self, trainer: pl.Trainer, pl_module: StyleTransferModule) -> None:
        model_file = written(trainer, ExportModelFile)
        if model_file is None:
            return
        summary = next_steps(
            steps=int(trainer.global_step),
            seconds=time.monotonic() - self._started,
            model_file=model_file,
            model_folder=written(trainer, WriteModelFolder),
            preview=written(trainer, WritePreview),
            log_dir=tensorboard_dir(trainer),
            styles=pl_module.style_names if pl_module.num_styles > 1 else (),
        )
        print(summary, flush=True)  # after the progress bar, which closed before


def tensorboard_dir(trainer: pl.Trainer) -> Path | None:
    """The folder ``tensorboard --logdir`` takes for this run (its first TensorBoard logger)."""
    dirs = [lg.root_dir for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
    return Path(dirs[0]) if dirs else None


def written(trainer: pl.Trainer, kind: type) -> Path | None:
    """The file the callback of that kind wrote (None: none configured, or not written)."""
    return next((c.path for c in trainer.callbacks if isinstance(c, kind)), None)


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
