"""The frozen VGG-16 loss network (Simonyan & Zisserman 2015).

Johnson et al. 2016 measure perceptual losses with the activations of an
ImageNet-trained VGG-16. Two releases of its weights are in use, each with its own
input convention, and the loss network must apply the one that belongs to its
weights:

- ``torchvision``: ``VGG16_Weights.IMAGENET1K_V1``; RGB in 0-1, normalized by the
  ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).
- ``caffe``: the original Oxford/Caffe release used by Johnson et al.; BGR in 0-255
  minus the per-channel mean (103.939, 116.779, 123.68), no std division.

Inputs are always RGB 0-255 (the transformer's pixel convention); preprocessing
returns a new tensor and never modifies its input.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

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


class VGGWeightsError(RuntimeError):
    """The VGG-16 weights could not be found, downloaded or read."""


def build_vgg16_features(last_layer: str) -> nn.Sequential:
    """torchvision-layout ``features`` truncated right after ``last_layer``."""
    if last_layer not in LAYER_INDEX:
        raise ValueError(f"unknown VGG-16 layer {last_layer!r}; choose from {list(LAYER_INDEX)}")
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
            raise ValueError(f"preprocessing must be one of {PREPROCESSING}, got {convention!r}")
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

    ``weights``: ``"imagenet"`` (torchvision's release, downloaded on first use),
    a path to a ``.pth`` state dict, or ``"random"`` (untrained; for tests).
    """

    def __init__(self, *, layers: list[str], weights: str = "imagenet", preprocessing: str):
        super().__init__()
        unknown = [name for name in layers if name not in LAYER_INDEX]
        if unknown:
            raise ValueError(f"unknown VGG-16 layers {unknown}; choose from {list(LAYER_INDEX)}")
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


def load_vgg16_state_dict(weights: str | os.PathLike, features: nn.Sequential) -> dict:
    """Read VGG-16 weights and return them keyed like ``features`` (``"0.weight"``...).

    Accepts a full torchvision VGG-16 state dict, or its ``features`` only, with
    or without the ``features.`` prefix. Layers past the truncation are dropped.
    """
    if str(weights) == "imagenet":
        raw = _download_torchvision_vgg16()
        source = "torchvision VGG16_Weights.IMAGENET1K_V1"
    else:
        path = Path(weights).expanduser()
        source = str(path)
        if not path.is_file():
            raise VGGWeightsError(f"{path}: VGG-16 weights file not found")
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # corrupt, truncated, not a torch file, or unsafe pickle
            raise VGGWeightsError(
                f"{path}: cannot read VGG-16 weights ({type(e).__name__}: {_first_line(e)})"
            ) from None
        if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
            raw = raw["state_dict"]
        if not isinstance(raw, dict):
            raise VGGWeightsError(f"{path}: expected a state dict, found {type(raw).__name__}")
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
            "'features.0.weight'"
        )
    for key, value in out.items():
        if tuple(value.shape) != tuple(wanted[key].shape):
            raise VGGWeightsError(
                f"{source}: tensor {key!r} has shape {tuple(value.shape)}, "
                f"expected {tuple(wanted[key].shape)} for VGG-16"
            )
    return out


def _download_torchvision_vgg16() -> dict:
    """torchvision's ImageNet VGG-16 (528 MB, cached in the torch hub folder)."""
    from torchvision.models import VGG16_Weights

    weights = VGG16_Weights.IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except Exception as e:  # URLError, HTTPError, hash mismatch, disk full...
        raise VGGWeightsError(
            f"cannot download the VGG-16 weights from {weights.url} "
            f"({type(e).__name__}: {_first_line(e)}). When offline, pass a local file: "
            "loss.vgg_weights=/path/to/vgg16.pth with loss.preprocessing=torchvision for "
            "torchvision weights, or loss=caffe loss.vgg_weights=/path/to/vgg16_caffe.pth "
            "for the Caffe release"
        ) from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "no details"
