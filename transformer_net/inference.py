"""Feed-forward stylization: one pass of a trained TransformerNet (Johnson et al. 2016).

Imports neither Lightning nor Hydra, so ``stylize.py`` starts fast.
"""

from __future__ import annotations

import os
import time

import torch

from .checkpoint import load_model


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: the first CUDA GPU if there is one, else Apple MPS, else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


class Stylizer:
    """A model file loaded on a device, applied to uint8 RGB images."""

    def __init__(self, *, model_path: str | os.PathLike, device: str = "auto"):
        self.device = pick_device(device)
        self.model, self.meta = load_model(model_path, device=self.device)
        self.model.requires_grad_(False)

    @torch.inference_mode()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) uint8 RGB -> (3, H, W) uint8 RGB, same size, on the CPU."""
        x = image.to(self.device, non_blocking=True).unsqueeze(0).float()  # (1, 3, H, W)
        y = self.model(x)
        return y.clamp_(0, 255).round_().to(torch.uint8)[0].cpu()

    def timed(self, image: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Like calling it; also returns the wall time in seconds (device synchronized)."""
        start = time.perf_counter()
        out = self(image)  # .cpu() synchronizes with the device
        return out, time.perf_counter() - start
