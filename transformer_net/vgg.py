"""The frozen VGG-16 loss network (Simonyan & Zisserman 2015).

Johnson et al. 2016 measure perceptual losses with the activations of an
ImageNet-trained VGG-16. Two releases of its weights are in use, each with its own
input convention, and the loss network must apply the one that belongs to its
weights:

- ``torchvision``: ``VGG16_Weights.IMAGENET1K_V1``; RGB in 0-1, normalized by the
  ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).
- ``caffe``: the original Oxford/Caffe release used by Johnson et al.; BGR in 0-255
  minus the per-channel mean (103.939, 116.779, 123.68), no std division.

Both can be named instead of given as files, and are then downloaded once into the
torch hub cache (``torch.hub.get_dir()/checkpoints``, i.e. ``$TORCH_HOME/hub``),
with the SHA-256 prefix in the file name checked before anything is kept:

- ``"caffe"`` (the default): Johnson's PyTorch conversion of the Oxford release,
  ``vgg16-00b39a1b.pth`` from his ``pytorch-vgg`` project (about 550 MB, with the
  classifier). Once its hash is checked, its 13 convolutions are saved as
  ``vgg16-00b39a1b-features.pth`` (59 MB, ``features.*`` keys only) and the
  original is deleted: the cache keeps only that features copy, which later runs
  load.
- ``"imagenet"``: torchvision's ``VGG16_Weights.IMAGENET1K_V1``, kept as
  ``vgg16-397923af.pth``, the very file torchvision itself downloads and uses.

Inputs are always RGB 0-255 (the transformer's pixel convention); preprocessing
returns a new tensor and never modifies its input.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
import urllib.parse
from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_torch_save
from .download import fetch_url
from .errors import ConfigError, DiskFullError, DownloadError, VGGWeightsError, first_line
from .weights_only import refused_global

# Index in torchvision's ``vgg16().features`` of each ReLU, by its usual name.
LAYER_INDEX = {
    "relu1_1": 1, "relu1_2": 3,
    "relu2_1": 6, "relu2_2": 8,
    "relu3_1": 11, "relu3_2": 13, "relu3_3": 15,
    "relu4_1": 18, "relu4_2": 20, "relu4_3": 22,
    "relu5_1": 25, "relu5_2": 27, "relu5_3": 29,
}  # fmt: skip
# torchvision's configuration "D": conv widths, "M" = 2x2 max pool.
_VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]

PREPROCESSING = ("torchvision", "caffe")
_TORCHVISION_MEAN = (0.485, 0.456, 0.406)
_TORCHVISION_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

# Johnson's conversion of the Oxford VGG-16 (github.com/jcjohnson/pytorch-vgg); the
# eight hex digits are the start of the file's SHA-256 (torch.hub's convention).
CAFFE_VGG16_URL = "https://web.eecs.umich.edu/~justincj/models/vgg16-00b39a1b.pth"
CAFFE_VGG16_SHA256_PREFIX = "00b39a1b"
# torchvision's VGG16_Weights.IMAGENET1K_V1 (same URL, so the same cached file).
IMAGENET_VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
IMAGENET_VGG16_SHA256_PREFIX = "397923af"
# Names accepted instead of a file: the two downloads, and untrained weights (tests).
DOWNLOADED_WEIGHTS = ("caffe", "imagenet")
WEIGHT_NAMES = (*DOWNLOADED_WEIGHTS, "random")
# Used when the calling tool gives no hint of its own.
_OFFLINE_HINT = (
    "loss.vgg_weights=/path/vgg16.pth (train.py) or --vgg-weights /path/vgg16.pth "
    "--preprocessing {preprocessing} (stylize.py, scripts/evaluate.py)"
)


def default_preprocessing(weights: str | os.PathLike) -> str:
    """The input convention that belongs to ``weights`` when none is given.

    ``imagenet`` -> ``torchvision``; ``random`` -> ``torchvision`` too (an untrained
    network is initialized for unit-scale inputs); ``caffe`` and files -> ``caffe``,
    the project's default release.
    """
    return "torchvision" if str(weights) in ("imagenet", "random") else "caffe"


def build_vgg16_features(last_layer: str) -> nn.Sequential:
    """torchvision-layout ``features`` truncated right after ``last_layer``."""
    if last_layer not in LAYER_INDEX:
        raise ConfigError(f"unknown VGG-16 layer {last_layer!r}; choose from {list(LAYER_INDEX)}")
    layers: list[nn.Module] = []
    in_ch = 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_ch, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_ch = int(v)
    return nn.Sequential(*layers[: LAYER_INDEX[last_layer] + 1])


class Preprocess(nn.Module):
    """RGB 0-255 -> the input convention of the VGG weights (out of place)."""

    def __init__(self, *, convention: str):
        super().__init__()
        if convention not in PREPROCESSING:
            raise ConfigError(f"preprocessing must be one of {PREPROCESSING}, got {convention!r}")
        self.convention = convention
        if convention == "torchvision":
            mean = torch.tensor(_TORCHVISION_MEAN) * 255.0
            scale = 1.0 / (torch.tensor(_TORCHVISION_STD) * 255.0)
        else:
            mean = torch.tensor(_CAFFE_MEAN_BGR).flip(0)  # stored in RGB order
            scale = torch.ones(3)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (x - self.mean) * self.scale  # (B, 3, H, W), new tensor
        if self.convention == "caffe":
            y = y.flip(1)  # RGB -> BGR
        return y


class VGGFeatures(nn.Module):
    """Frozen VGG-16 that returns the activations of the requested layers.

    ``weights``: ``"caffe"`` (Johnson et al.'s Oxford/Caffe release) or
    ``"imagenet"`` (torchvision's), both downloaded on first use; a path to a
    ``.pth`` state dict; or ``"random"`` (untrained; for tests).
    """

    def __init__(self, *, layers: list[str], weights: str = "caffe", preprocessing: str):
        super().__init__()
        unknown = [name for name in layers if name not in LAYER_INDEX]
        if unknown:
            raise ConfigError(f"unknown VGG-16 layers {unknown}; choose from {list(LAYER_INDEX)}")
        self.layers = sorted(set(layers), key=LAYER_INDEX.__getitem__)
        self.preprocess = Preprocess(convention=preprocessing)
        self.features = build_vgg16_features(self.layers[-1])
        if weights != "random":
            self.features.load_state_dict(load_vgg16_state_dict(weights, self.features))
        self.features.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatures:
        # Always in eval mode: it is a fixed measuring instrument, not a trainee.
        return super().train(False)

    def forward(self, x: torch.Tensor, *, last: str | None = None) -> dict[str, torch.Tensor]:
        """RGB 0-255 (B, 3, H, W) -> {layer: (B, C_l, H_l, W_l)}.

        ``last`` stops early: the content image only needs the content layer.
        """
        wanted = self.layers
        if last is not None:
            wanted = [n for n in self.layers if LAYER_INDEX[n] <= LAYER_INDEX[last]]
        stop = LAYER_INDEX[wanted[-1]]
        targets = {LAYER_INDEX[n]: n for n in wanted}
        out: dict[str, torch.Tensor] = {}
        h = self.preprocess(x)
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in targets:
                out[targets[i]] = h
            if i == stop:
                break
        return out


def load_vgg16_state_dict(
    weights: str | os.PathLike, features: nn.Sequential, *, hint: str | None = None
) -> dict:
    """Read VGG-16 weights and return them keyed like ``features`` (``"0.weight"``...).

    ``weights``: ``"caffe"`` or ``"imagenet"`` (downloaded once, see
    :func:`fetch_vgg16`; ``hint`` is its offline advice), or a path. Accepts a full
    torchvision VGG-16 state dict, or its ``features`` only, with or without the
    ``features.`` prefix; ``classifier.*`` tensors and layers past the truncation
    are dropped.
    """
    if str(weights) in DOWNLOADED_WEIGHTS:
        path = fetch_vgg16(str(weights), hint=hint)
        source = f"{path} ({weights} VGG-16 in the torch hub cache)"
        retry = f"; delete {path} and rerun to download it again"
    else:
        path = Path(weights).expanduser()
        source, retry = str(path), ""
        if not path.is_file():
            raise VGGWeightsError(f"{path}: VGG-16 weights file not found")
    raw = _read_state_dict(path, source, retry)
    wanted = features.state_dict()
    out = {}
    for key, value in raw.items():
        if not isinstance(key, str) or key.startswith("classifier."):
            continue
        key = key.removeprefix("features.")
        if key in wanted:
            out[key] = value
    missing = [k for k in wanted if k not in out]
    if missing:
        raise VGGWeightsError(
            f"{source}: not a VGG-16 state dict, missing {len(missing)} of {len(wanted)} "
            f"tensors (first: {missing[0]!r}); expected torchvision key names such as "
            f"'features.0.weight'{retry}"
        )
    for key, value in out.items():
        if tuple(value.shape) != tuple(wanted[key].shape):
            raise VGGWeightsError(
                f"{source}: tensor {key!r} has shape {tuple(value.shape)}, "
                f"expected {tuple(wanted[key].shape)} for VGG-16{retry}"
            )
    return out


def _read_state_dict(path: Path, source: str, retry: str = "") -> dict:
    """``torch.load`` of tensors only; every failure is one line naming ``source``."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message advises weights_only=False; that runs whatever the file holds.
        refused = refused_global(e, path)
        if refused:
            raise VGGWeightsError(
                f"{source}: refused: besides tensors the file holds Python objects ({refused}), "
                "and loading them could run code; use a file of tensors only, such as one "
                "saved with torch.save(model.state_dict(), path)"
            ) from None
        text = str(e)
        detail = text.rpartition("WeightsUnpickler error:")[2].split("Check the documentation")[0]
        detail = " ".join(detail.split())
        if not detail or "weights_only" in detail:
            detail = "not a file of tensors"
        raise VGGWeightsError(
            f"{source}: cannot read VGG-16 weights (UnpicklingError: {detail}){retry}"
        ) from None
    except Exception as e:  # corrupt, truncated, not a torch file
        raise VGGWeightsError(
            f"{source}: cannot read VGG-16 weights ({type(e).__name__}: {first_line(e)}){retry}"
        ) from None
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict):
        raise VGGWeightsError(f"{source}: expected a state dict, found {type(raw).__name__}")
    return raw


def fetch_vgg16(name: str, *, hint: str | None = None, progress: bool = True) -> Path:
    """Download the named VGG-16 weights once; return the local file to load.

    ``name``: ``"caffe"`` or ``"imagenet"``. Files go to
    ``torch.hub.get_dir()/checkpoints``; a download is written to a temporary file
    and kept under its real name only once its SHA-256 starts with the prefix in
    the name. ``"caffe"`` is then reduced to its features
    (``<name>-features.pth``, the file returned), and the original deleted.

    On failure (offline, interrupted, wrong hash) a one-line
    :class:`VGGWeightsError` ends with ``hint``: how the calling tool takes a local
    file instead (e.g. ``"loss.vgg_weights=/path/vgg16.pth"``).
    """
    if name not in DOWNLOADED_WEIGHTS:
        raise ValueError(f"unknown VGG-16 weights {name!r}; choose from {DOWNLOADED_WEIGHTS}")
    if name == "caffe":
        url, prefix = CAFFE_VGG16_URL, CAFFE_VGG16_SHA256_PREFIX
        label = "Caffe VGG-16 weights (Johnson et al.)"
    else:
        url, prefix = IMAGENET_VGG16_URL, IMAGENET_VGG16_SHA256_PREFIX
        label = "torchvision VGG-16 weights"
    if hint is None:
        hint = _OFFLINE_HINT.format(preprocessing=default_preprocessing(name))
    original, features = _cache_paths(name)
    if name == "imagenet":
        if not original.is_file():
            _download(url, original, prefix, label=label, hint=hint, progress=progress)
        return original
    if features.is_file():
        return features
    if original.is_file():  # left by an interrupted conversion, or put there by hand
        _check_sha256(original, prefix, hint=hint)
    else:
        _download(url, original, prefix, label=label, hint=hint, progress=progress)
    raw = _read_state_dict(original, f"{original} ({label})", f"; delete {original} and rerun")
    kept = {k: v for k, v in raw.items() if isinstance(k, str) and k.startswith("features.")}
    if not kept:
        raise VGGWeightsError(
            f"{original}: no 'features.*' tensors in the {label}; delete it and rerun, or pass "
            f"a local file: {hint}"
        )
    try:  # atomic: other processes see all of it or nothing
        atomic_torch_save(kept, features)
    except OSError as e:  # a full disk (DiskFullError) included
        raise VGGWeightsError(
            f"cannot write {features}: {first_line(e)}; free some disk space or set "
            f"TORCH_HOME to a writable folder, or pass a local file: {hint}"
        ) from None
    original.unlink(missing_ok=True)  # the features copy replaces it
    return features


def is_cached(name: str) -> bool:
    """Whether :func:`fetch_vgg16` would find ``name``'s weights without the network."""
    original, features = _cache_paths(name)
    return original.is_file() or (name == "caffe" and features.is_file())


def _cache_paths(name: str) -> tuple[Path, Path]:
    """Where ``name``'s download (the URL's file name in the torch hub checkpoints
    folder) and, for ``caffe``, its features-only copy live."""
    url = CAFFE_VGG16_URL if name == "caffe" else IMAGENET_VGG16_URL
    original = (
        Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlsplit(url).path).name
    )
    return original, original.with_name(f"{original.stem}-features{original.suffix}")


def _download(url: str, dst: Path, prefix: str, *, label: str, hint: str, progress: bool) -> None:
    """``download.fetch_url`` (torch.hub, the hash checked), failures as one line with ``hint``."""
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VGGWeightsError(
            f"cannot create {dst.parent}: {first_line(e)}; set TORCH_HOME to a writable "
            f"folder, or pass a local file: {hint}"
        ) from None
    if progress:
        print(f"downloading the {label} from {url} into {dst}", file=sys.stderr)
    try:
        # Written to a temporary file, kept under dst only if the hash matches.
        fetch_url(
            url,
            dst,
            sha256=prefix,
            what=f"the {label} from {url}",
            advice=f"offline, pass a local file: {hint}",
            progress=progress,
        )
    except DownloadError as e:
        raise VGGWeightsError(str(e)) from None
    except DiskFullError as e:  # one error class for the callers of fetch_vgg16
        raise VGGWeightsError(
            f"{e}; free some disk space or set TORCH_HOME to another disk, or pass a local "
            f"file: {hint}"
        ) from None


def _check_sha256(path: Path, prefix: str, *, hint: str) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    if not digest.hexdigest().startswith(prefix):
        raise VGGWeightsError(
            f"{path}: SHA-256 starts {digest.hexdigest()[:8]}, not {prefix}; delete it and rerun "
            f"to download it again, or pass a local file: {hint}"
        )
