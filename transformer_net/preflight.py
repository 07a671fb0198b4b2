"""Every input of a training run, checked before anything is downloaded or built.

A run needs style images (files, or URLs downloaded once into the cache), the
VGG-16 weights (a file, or ``caffe`` / ``imagenet``: downloaded once into the
torch hub cache) and photos (a folder, or a COCO sample fetched into it when
``data.download_sample`` > 0). ``prepare_inputs`` first checks every local path
and reports all problems in one message. Then it downloads what is not cached,
smallest first; when a download cannot reach its server (offline), the others
are not tried, and one message names every input still missing together with
the command that passes local files instead.

``remove_unused_run_dir`` cleans up after a run that failed before training:
Hydra creates the run folder (``.hydra/``, ``train.log``) before ``train()`` runs.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from . import download, vgg
from .data import DataError, check_folder, holds_photos
from .download import DownloadError
from .errors import InputError
from .image import ImageError
from .styles import StyleSource, style_sources
from .vgg import VGGWeightsError

# What Hydra writes into the run folder before train() runs.
HYDRA_RUN_FILES = frozenset({".hydra", "train.log"})
HYDRA_CONFIG_FILES = frozenset({"config.yaml", "hydra.yaml", "overrides.yaml"})


@dataclass
class _Download:
    what: str  # "the painting of style wave"
    setting: str  # the override that passes a local file instead
    fetch: Callable[[], Path]


def prepare_inputs(cfg: DictConfig, *, command: Sequence[str] | None = None) -> list[StyleSource]:
    """Check all inputs of ``cfg``, then download the missing ones; returns the styles.

    Each returned style has its local image ``path`` (given, cached or just
    downloaded), in the order of the network's style indices.

    ``command``: the command-line overrides of the run (default: Hydra's, when
    running under Hydra), repeated in the offline message's command.
    Raises ImageError, VGGWeightsError, DataError (one problem), InputError
    (several, or several downloads impossible offline) or the error of the one
    download that failed.
    """
    styles = style_sources(cfg.style)
    problems: list[Exception] = []
    downloads: list[_Download] = []
    for style in styles:  # smallest downloads first: they find out soonest that we are offline
        if style.path is None:
            what = f"the painting of style {style.name}"
            downloads.append(_Download(what, style.offline_setting, style.fetch))
        elif not style.path.is_file():
            problems.append(ImageError(f"{style.path}: style image not found ({style.setting})"))
    data = cfg.get("data") or {}
    if data.get("root") is not None:
        root = Path(str(data.root)).expanduser()
        sample = int(data.get("download_sample") or 0)
        if sample > 0 and not (root.is_dir() and holds_photos(root)):
            downloads.append(
                _Download(
                    what=f"{sample} COCO sample photos for {root}",
                    setting="data.root=/path/to/photos",
                    fetch=lambda: download.fetch_coco_sample(root, count=sample),
                )
            )
        else:
            _collect(problems, check_folder, root, "data.root", prepared_ok=True)
    if data.get("val_root"):
        _collect(problems, check_folder, Path(str(data.val_root)).expanduser(), "data.val_root")
    weights = str(cfg.loss.vgg_weights)
    if weights in vgg.DOWNLOADED_WEIGHTS:
        if not vgg.is_cached(weights):
            downloads.append(_vgg_download(weights))
    elif weights != "random" and not Path(weights).expanduser().is_file():
        problems.append(
            VGGWeightsError(f"{weights}: VGG-16 weights file not found (loss.vgg_weights)")
        )
    _raise_together(problems)
    _fetch_all(downloads, _hydra_overrides() if command is None else list(command))
    return styles


def remove_unused_run_dir(run_dir: Path) -> bool:
    """Delete ``run_dir`` if it holds only what Hydra wrote at startup; True if deleted.

    A run that fails before training (a missing file, offline) would otherwise
    leave ``outputs/<name>/`` with nothing but ``.hydra/`` and ``train.log``. A
    folder holding anything else (an earlier run, a file of the user's) is kept.
    """
    try:
        names = {p.name for p in run_dir.iterdir()}
        hydra = run_dir / ".hydra"
        hydra_names = {p.name for p in hydra.iterdir()} if hydra.is_dir() else set()
    except OSError:
        return False
    if not names <= HYDRA_RUN_FILES or not hydra_names <= HYDRA_CONFIG_FILES:
        return False
    if (run_dir / "train.log").is_dir() or (hydra.exists() and not hydra.is_dir()):
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    return not run_dir.exists()


def _vgg_download(name: str) -> _Download:
    label = {"caffe": "the Caffe VGG-16 weights", "imagenet": "torchvision's VGG-16 weights"}[name]
    return _Download(
        what=f"{label} (loss.vgg_weights={name})",
        setting="loss.vgg_weights=/path/to/vgg16.pth",
        fetch=lambda: vgg.fetch_vgg16(name, hint="loss.vgg_weights=/path/vgg16.pth"),
    )


def _raise_together(problems: list[Exception]) -> None:
    """One problem as itself; several as one InputError naming them all."""
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise InputError(f"{len(problems)} inputs are missing: " + "; ".join(map(str, problems)))


def _collect(problems: list[Exception], check: Callable[..., None], *args, **kwargs) -> None:
    try:
        check(*args, **kwargs)
    except DataError as e:
        problems.append(e)


def _fetch_all(downloads: list[_Download], command: Sequence[str]) -> None:
    """Run the downloads in order; on the first that cannot reach its server, name all missing."""
    for i, item in enumerate(downloads):
        try:
            item.fetch()  # each fetch records its file (styles.StyleSource.path, data.root)
        except (DownloadError, VGGWeightsError) as e:
            missing = downloads[i:]
            # Only a failure to reach the server says the others would fail too;
            # a refused URL or a full disk is about this download alone.
            offline = isinstance(e, VGGWeightsError) or e.network
            if len(missing) == 1 or not offline:
                raise
            head = str(e).split("; ")[0]  # what failed and why, without its own hint
            raise InputError(
                f"cannot download {len(missing)} inputs of this run ({head}): "
                f"{', '.join(m.what for m in missing)}; offline, pass local files instead: "
                f"{offline_command(command, [m.setting for m in missing])}"
            ) from None


def offline_command(overrides: Sequence[str], settings: Sequence[str]) -> str:
    """``python train.py`` with the run's overrides and ``settings`` replacing their keys."""
    keys = {setting.split("=", 1)[0] for setting in settings}
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in keys]
    ordered = sorted(settings, key=lambda s: (not s.startswith("data."), not s.startswith("style")))
    return shlex.join(["python", "train.py", *kept, *ordered])


def _hydra_overrides() -> list[str]:
    """The command-line overrides of this run when it runs under Hydra, else none."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(OmegaConf.to_container(HydraConfig.get().overrides.task))
