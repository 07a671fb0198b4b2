"""Train a style model (Johnson et al. 2016) with Lightning, configured by Hydra.

One network can also learn several styles (Dumoulin et al. 2017, style=multi).

    python train.py experiment=quickstart                 # minutes on a CPU
    python train.py style=the_scream data.root=data/coco/train2014
    python train.py style=custom style.image=painting.jpg style.name=mine
    python train.py style=wave ckpt_path=last             # resume
    python train.py style=multi 'style.names=[starry_night,wave]'   # one network, 2 styles
    python train.py --help                                # all config groups

Everything a run writes goes to ``output_dir`` (outputs/<style> by default):
TensorBoard logs, checkpoints, the model file for stylize.py and a preview.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.utilities.exceptions import SIGTERMException

from transformer_net.checkpoint import ModelFileError, save_model_file
from transformer_net.data import DataError
from transformer_net.download import DownloadError, fetch_file
from transformer_net.image import ImageError
from transformer_net.inference import bf16_emulation_warning
from transformer_net.module import NonFiniteLossError, auto_precision, write_preview
from transformer_net.vgg import VGGWeightsError

log = logging.getLogger("transformer_net.train")
# Errors caused by the user's input: reported as one line, no traceback.
USER_ERRORS = (
    DataError,
    DownloadError,
    ImageError,
    ModelFileError,
    VGGWeightsError,
    OmegaConfBaseException,
    ValueError,
    FileNotFoundError,
    NonFiniteLossError,
)


def train(cfg: DictConfig) -> dict[str, Path]:
    """Train as configured; returns the paths of the model file, last checkpoint and logs."""
    output_dir = Path(cfg.output_dir)
    # Check the inputs before building a network or touching a GPU (the style
    # image is decoded by the module, before the VGG weights are loaded).
    styles = resolve_styles(cfg.style)
    multi = "names" in cfg.style
    if multi:  # style=multi: the module gets the lists (in the order of style.names)
        cfg.module.style_image = [str(path) for _, path in styles]
        cfg.module.style_name = [name for name, _ in styles]
    else:
        cfg.style.image = str(styles[0][1])
    vgg_weights = str(cfg.loss.vgg_weights)
    if vgg_weights not in ("imagenet", "random") and not Path(vgg_weights).is_file():
        raise VGGWeightsError(f"{vgg_weights}: VGG-16 weights file not found (loss.vgg_weights)")
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, output_dir)

    if cfg.trainer.precision == "auto":
        cfg.trainer.precision = auto_precision()
    on_cpu = cfg.trainer.accelerator == "cpu" or not torch.cuda.is_available()
    warning = bf16_emulation_warning(torch.device("cpu")) if on_cpu else None
    if warning and "bf16" in str(cfg.trainer.precision):
        log.warning("trainer.precision=%s: %s", cfg.trainer.precision, warning)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.find_files()
    module = hydra.utils.instantiate(cfg.module)
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    # A SLURM job requeued after SIGUSR1 resumes from Lightning's hpc_ckpt_N.ckpt.
    requeued = SLURMEnvironment.detect() and any(output_dir.glob("hpc_ckpt_*.ckpt"))
    if ckpt_path or requeued:
        continue_log_versions(cfg)
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values()]
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)

    # ModelCheckpoint saves every N steps; the final state is saved here, on every
    # rank (Lightning writes on rank 0), so that `ckpt_path=last` extends the run.
    result = {"output_dir": output_dir, "checkpoint": output_dir / "checkpoints" / "last.ckpt"}
    trainer.save_checkpoint(result["checkpoint"], weights_only=False)  # with optimizer state
    if trainer.is_global_zero:
        if not all(torch.isfinite(p).all() for p in module.transformer.parameters()):
            raise NonFiniteLossError("the trained weights contain NaN/inf: no model file written")
        meta = {
            "style": cfg.style.name,
            "styles": [name for name, _ in styles],  # by index: stylize.py --style-index
            **(
                {"style_images": [str(path) for _, path in styles]}
                if multi
                else {"style_image": cfg.style.image}
            ),
            "global_step": int(trainer.global_step),
            "image_size": int(cfg.data.image_size),
            "loss": OmegaConf.to_container(cfg.loss, resolve=True),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        result["model_file"] = save_model_file(module.transformer, cfg.model_file, meta=meta)
        preview = datamodule.preview_images(4)  # (n, 3, S, S) uint8
        result["preview"] = write_preview(module.transformer, preview, output_dir / "preview.jpg")
        log.info("model file: %s", result["model_file"])
        log.info("preview: %s", result["preview"])
    return result


def resolve_styles(style: DictConfig) -> list[tuple[str, Path]]:
    """(name, image path) of each style: the one style, or those of ``style.names``.

    ``style=multi`` lists names of ``style.catalog`` entries (the single-style
    configs, plus any added with ``+style.catalog.<name>.image=...``).
    """
    if "names" not in style:
        return [(style.name, resolve_style_image(style))]
    names = [str(name) for name in style.names]
    if not names:
        raise ValueError("style.names is empty: list the styles to train")
    if len(set(names)) != len(names):
        raise ValueError(f"style.names lists a style twice: {names}")
    catalog = style.get("catalog") or {}
    for name in names:  # all names are checked before anything is downloaded
        if name not in catalog:
            raise ValueError(
                f"style.names: unknown style {name!r}; known: {', '.join(catalog)} "
                f"(add a painting with +style.catalog.{name}.image=/path/painting.jpg)"
            )
    result = []
    for name in names:
        entry = OmegaConf.create(
            {"name": name, "image": catalog[name].get("image"), "url": catalog[name].get("url")}
        )
        result.append((name, resolve_style_image(entry, key=f"style.catalog.{name}.image")))
    return result


def resolve_style_image(style: DictConfig, *, key: str = "style.image") -> Path:
    """The style config's image path, downloading ``style.url`` once if no path is set."""
    if style.get("image"):
        path = Path(style.image).expanduser()
        if not path.is_file():
            raise ImageError(f"{path}: style image not found ({key})")
        return path
    if not style.get("url"):
        raise ValueError(f"style {style.name!r} has neither style.image nor style.url")
    suffix = Path(str(style.url)).suffix or ".jpg"
    try:
        return fetch_file(str(style.url), name=f"{style.name}{suffix}", subdir="styles")
    except DownloadError as e:
        raise DownloadError(f"{e} (offline: pass {key}=/path/to/painting.jpg)") from None


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """``last`` -> <output_dir>/checkpoints/last.ckpt if it exists (else a fresh start)."""
    if ckpt_path in (None, ""):
        return None
    if ckpt_path == "last":
        last = output_dir / "checkpoints" / "last.ckpt"
        if last.is_file():
            return str(last)
        log.warning("no checkpoint at %s: starting a new run", last)
        return None
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"{ckpt_path}: checkpoint not found (ckpt_path)")
    return str(ckpt_path)


def continue_log_versions(cfg: DictConfig) -> None:
    """On resume, log into the newest existing TensorBoard version so the curves continue.

    Without this every resumed run would start a new ``version_N`` and each
    preemption would split the curves into another run in TensorBoard.
    """
    for logger_cfg in (cfg.get("logger") or {}).values():
        if "version" not in logger_cfg or logger_cfg.version is not None:
            continue
        log_dir = Path(logger_cfg.save_dir) / str(logger_cfg.get("name") or "")
        versions = [
            int(d.name.split("_", 1)[1])
            for d in log_dir.glob("version_*")
            if d.is_dir() and d.name.split("_", 1)[1].isdigit()
        ]
        if versions:
            logger_cfg.version = max(versions)


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> None:
    torch.set_float32_matmul_precision("high")
    # A deprecation inside Lightning itself, not actionable by users.
    warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")
    try:
        train(cfg)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except InstantiationException as e:  # a constructor rejected its config values
        if not isinstance(e.__cause__, USER_ERRORS):
            raise
        print(f"error: {e.__cause__}", file=sys.stderr)
        sys.exit(2)
    except SIGTERMException:
        # Preempted: CheckpointOnInterrupt saved last.ckpt. 143 = 128 + SIGTERM,
        # so schedulers see a killed job (and requeue it where configured).
        print("stopped by SIGTERM; resume with ckpt_path=last", file=sys.stderr)
        sys.exit(143)


if __name__ == "__main__":
    main()
