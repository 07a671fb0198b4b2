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


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: Ampere+ GPUs, CPUs with AVX512-BF16/AMX.

    There bf16 runs about 2x faster than fp32 (docs/benchmarks.md) with outputs
    within about 54 dB PSNR of fp32; elsewhere it is emulated and slower.
    """
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def pick_precision(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 where the device computes it natively (same range as fp32), else fp32."""
    if name == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    if name not in PRECISIONS:
        raise ValueError(f"precision must be auto, {', '.join(PRECISIONS)}; got {name!r}")
    return PRECISIONS[name]


class Stylizer:
    """A model file loaded on a device, applied to uint8 RGB images.

    On CUDA the weights and activations use ``precision`` (bf16 by default) and
    the channels_last memory format; uploads are uint8 from pinned memory (4x
    fewer bytes than float) and converted on the device. ``compile`` uses
    ``torch.compile`` (worth it for many images of one size, e.g. video frames).
    """

    def __init__(
        self,
        *,
        model_path: str | os.PathLike,
        device: str = "auto",
        precision: str = "auto",
        compile: bool = False,
    ):
        self.device = pick_device(device)
        self.dtype = pick_precision(precision, self.device)
        self.model, self.meta = load_model(model_path, device=self.device)
        self.model.requires_grad_(False).to(dtype=self.dtype)
        self.channels_last = self.device.type == "cuda"
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._forward = torch.compile(self.model) if compile else self.model

    @torch.inference_mode()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) uint8 RGB -> (3, H, W) uint8 RGB, same size, on the CPU."""
        if self.device.type == "cuda":
            image = image.pin_memory()
        x = image.to(self.device, non_blocking=True).unsqueeze(0).to(self.dtype)  # (1, 3, H, W)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = self._forward(x).float()
        return y.clamp_(0, 255).round_().to(torch.uint8)[0].cpu()

    @torch.inference_mode()
    def batch(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 RGB -> (B, 3, H, W) uint8 RGB on the CPU: one pass for B frames.

        Video frames share one size, so a batch fills the GPU far better than
        single frames (and amortizes the per-call overhead on the CPU).
        """
        if self.device.type == "cuda":
            frames = frames.pin_memory()
        x = frames.to(self.device, non_blocking=True).to(self.dtype)  # (B, 3, H, W)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = self._forward(x).float()
        return y.clamp_(0, 255).round_().to(torch.uint8).cpu()

    def timed(self, image: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Like calling it; also returns the wall time in seconds (device synchronized)."""
        start = time.perf_counter()
        out = self(image)  # .cpu() synchronizes with the device
        return out, time.perf_counter() - start
