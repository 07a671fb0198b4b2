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
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pytorch_lightning.callbacks import ModelSummary, ProgressBar
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.utilities.exceptions import SIGTERMException

from transformer_net.atomic import DiskFullError
from transformer_net.checkpoint import ModelFileError, save_model_file
from transformer_net.console import next_steps, quiet_lightning
from transformer_net.data import DataError
from transformer_net.download import DownloadError
from transformer_net.hparams import log_config
from transformer_net.image import ImageError
from transformer_net.inference import bf16_emulation_warning
from transformer_net.module import NonFiniteLossError, auto_precision, write_preview
from transformer_net.preflight import prepare_inputs, remove_unused_run_dir
from transformer_net.preflight import resolve_styles as resolve_styles  # imported from here
from transformer_net.runs import RunFolderError, resolve_resume, start_over
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
    RunFolderError,
)


def train(cfg: DictConfig) -> dict[str, Path]:
    """Train as configured; returns the paths of the model file, last checkpoint and logs."""
    output_dir = Path(cfg.output_dir)
    quiet_lightning()
    # A SLURM job requeued after SIGUSR1 resumes from Lightning's hpc_ckpt_N.ckpt.
    requeued = SLURMEnvironment.detect() and any(output_dir.glob("hpc_ckpt_*.ckpt"))
    # The run folder first: a run that is refused must not download anything.
    ckpt_path = resolve_resume(
        output_dir=output_dir,
        ckpt_path=cfg.ckpt_path,
        model=OmegaConf.to_container(cfg.model, resolve=True),
        loss=OmegaConf.to_container(cfg.loss, resolve=True),
        model_file=Path(cfg.model_file),
        overwrite=bool(cfg.get("overwrite", False)),
        requeued=requeued,
    )

    # Check every input before building a network or touching a GPU, then fetch
    # what is missing (style images, COCO sample, VGG weights); offline, one
    # message names all that is missing (transformer_net/preflight.py).
    styles = prepare_inputs(cfg)
    multi = "names" in cfg.style
    if multi:  # style=multi: the module gets the lists (in the order of style.names)
        cfg.module.style_image = [str(path) for _, path in styles]
        cfg.module.style_name = [name for name, _ in styles]
    else:
        cfg.style.image = str(styles[0][1])
    if not ckpt_path and cfg.get("overwrite", False):
        start_over(output_dir)
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
    # Lightning refuses a progress bar callback when trainer.enable_progress_bar is
    # false; the switches decide, whatever the callbacks group holds.
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if not cfg.trainer.get("enable_model_summary", True):
        callbacks = [c for c in callbacks if not isinstance(c, ModelSummary)]
    if ckpt_path or requeued:
        continue_log_versions(cfg)
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values()]
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    # The resolved config: hparams.yaml, and TensorBoard's HPARAMS tab against val/loss.
    log_config(trainer.loggers, OmegaConf.to_container(cfg, resolve=True))

    started = time.monotonic()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    seconds = time.monotonic() - started

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
        log_dirs = [lg.root_dir for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        summary = next_steps(
            steps=int(trainer.global_step),
            seconds=seconds,
            model_file=result["model_file"],
            preview=result["preview"],
            log_dir=Path(log_dirs[0]) if log_dirs else None,
            styles=[name for name, _ in styles] if multi else (),
        )
        print(summary, flush=True)  # stdout: what to do next, after the progress bar
    return result


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
    run_dir = Path(HydraConfig.get().runtime.output_dir)  # Hydra created it before this call
    finished = False
    try:
        train(cfg)
        finished = True
    except DiskFullError as e:  # failed work, not bad usage: the message says what was kept
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
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
    finally:
        # A run that failed before training leaves no folder holding only Hydra's files.
        if not finished:
            remove_unused_run_dir(run_dir)


if __name__ == "__main__":
    main()
