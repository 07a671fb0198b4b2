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
``train(cfg)`` only instantiates, fits and returns; the package holds the logic
(inputs: ``preflight.py``, run folder: ``runs.py``, the math: ``module.py``, the
side jobs: ``callbacks.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pytorch_lightning.callbacks import ModelSummary, ProgressBar
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.utilities.exceptions import SIGTERMException

from transformer_net.callbacks import (
    ExportModelFile,
    FinalCheckpoint,
    WriteModelFolder,
    WritePreview,
    tensorboard_dir,
    written,
)
from transformer_net.console import quiet_lightning
from transformer_net.errors import TransformerNetError, first_line
from transformer_net.hparams import log_config
from transformer_net.module import training_precision
from transformer_net.preflight import prepare_inputs, remove_unused_run_dir
from transformer_net.runs import newest_log_version, resolve_resume, start_over
from transformer_net.styles import load_style_images, style_sources
from transformer_net.warm_start import read_warm_start


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train as configured; returns what it wrote: ``output_dir``, ``checkpoint``,
    ``model_file``, ``preview`` and ``model_folder`` (rank 0), ``log_dir``, and the
    ``steps`` trained.

    Raises the project's errors (``transformer_net.errors``) for bad input.
    """
    quiet_lightning()
    # Resolved first: a bad interpolation (e.g. optim.scheduler=cos) fails before any work.
    config = OmegaConf.to_container(cfg, resolve=True)
    output_dir = Path(cfg.output_dir)
    # A SLURM job requeued after SIGUSR1 resumes from Lightning's hpc_ckpt_N.ckpt.
    requeued = SLURMEnvironment.detect() and any(output_dir.glob("hpc_ckpt_*.ckpt"))
    # The run folder first: a run that is refused must not download anything.
    ckpt_path = resolve_resume(
        output_dir=output_dir,
        ckpt_path=cfg.ckpt_path,
        model=config["model"],
        loss=config["loss"],
        model_file=Path(cfg.model_file),
        overwrite=bool(cfg.get("overwrite", False)),
        requeued=requeued,
    )
    # A warm start is read (and its architecture checked) before anything is
    # downloaded; a resumed run takes its weights from the checkpoint instead.
    warm = None
    if cfg.get("init_from") and not ckpt_path and not requeued:
        warm = read_warm_start(
            str(cfg.init_from),
            model_args=config["model"],
            num_styles=len(style_sources(cfg.style)),
            style=cfg.get("init_from_style"),
            preset=_choice("model"),
        )
    # Every input checked, then what is missing fetched (one message names all
    # that is missing offline): style images, COCO sample, VGG weights.
    styles = prepare_inputs(cfg)
    if not ckpt_path and cfg.get("overwrite", False):
        start_over(output_dir)

    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    datamodule.find_files()  # an unusable photo folder fails before the networks are built
    module = instantiate(
        cfg.module,
        style_images=load_style_images([s.path for s in styles], cfg.style.size),
        style_names=[s.name for s in styles],
        style_sources=[str(s.path) for s in styles],
        init_from=warm.description if warm else None,
    )
    if warm:
        warm.apply(module.transformer)
    callbacks = _callbacks(cfg)
    loggers = _loggers(cfg, resumed=bool(ckpt_path or requeued))
    precision = training_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers, precision=precision
    )
    # The resolved config: hparams.yaml, and TensorBoard's HPARAMS tab against val/loss.
    log_config(
        trainer.loggers, {**config, "trainer": {**config["trainer"], "precision": precision}}
    )

    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)

    return {
        "output_dir": output_dir,
        "checkpoint": written(trainer, FinalCheckpoint),
        "model_file": written(trainer, ExportModelFile),
        "preview": written(trainer, WritePreview),
        "model_folder": written(trainer, WriteModelFolder),
        "log_dir": tensorboard_dir(trainer),
        "steps": int(trainer.global_step),
    }


def _choice(group: str) -> str | None:
    """The option chosen for a config group (``model=slim``: slim), under Hydra."""
    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get(group)


def _callbacks(cfg: DictConfig) -> list[pl.Callback]:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    # Lightning refuses a progress bar callback when trainer.enable_progress_bar is
    # false; the switches decide, whatever the callbacks group holds.
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if not cfg.trainer.get("enable_model_summary", True):
        callbacks = [c for c in callbacks if not isinstance(c, ModelSummary)]
    return callbacks


def _loggers(cfg: DictConfig, *, resumed: bool) -> list:
    """The loggers; a resumed run logs into the newest existing TensorBoard version."""
    loggers = []
    for logger_cfg in (cfg.get("logger") or {}).values():
        version = {}
        if resumed and "version" in logger_cfg and logger_cfg.version is None:
            found = newest_log_version(logger_cfg.save_dir, logger_cfg.get("name"))
            version = {} if found is None else {"version": found}
        loggers.append(instantiate(logger_cfg, **version))
    return loggers


@hydra.main(
    version_base="1.3", config_path=str(Path(__file__).parent / "configs"), config_name="train"
)
def main(cfg: DictConfig) -> None:
    torch.set_float32_matmul_precision("high")
    run_dir = Path(HydraConfig.get().runtime.output_dir)  # Hydra created it before this call
    result = None
    try:
        result = train(cfg)
    except SIGTERMException:
        # Preempted: CheckpointOnInterrupt saved last.ckpt. 143 = 128 + SIGTERM,
        # so schedulers see a killed job (and requeue it where configured).
        print("stopped by SIGTERM; resume with ckpt_path=last", file=sys.stderr)
        sys.exit(143)
    except (TransformerNetError, OmegaConfBaseException, InstantiationException) as e:
        # Only our own errors (and config errors) are one line; a bug keeps its traceback.
        error = e.__cause__ if isinstance(e, InstantiationException) else e
        if not isinstance(error, (TransformerNetError, OmegaConfBaseException)):
            raise
        message = first_line(error, limit=2000)
        key = getattr(error, "full_key", None)  # OmegaConf's: which config key
        where = f" (config key {key})" if key and key not in message else ""
        print(f"error: {message}{where}", file=sys.stderr)
        sys.exit(getattr(error, "exit_code", 2))
    finally:
        # A run that failed before training leaves no folder holding only Hydra's files.
        if result is None:
            remove_unused_run_dir(run_dir)


if __name__ == "__main__":
    main()
