"""Style transfer by optimizing the image itself (Gatys et al. 2016).

"Image Style Transfer Using Convolutional Neural Networks", CVPR 2016: start from
the photo (or noise) and minimize the same perceptual loss the feed-forward
networks are trained with (``loss.PerceptualLoss``: same layers, Gram matrices,
weights and pixel conventions), with L-BFGS or Adam. Slow (hundreds of VGG
passes per image) but the quality yardstick for the trained networks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .loss import PerceptualLoss

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise")


def optimize_image(
    *,
    content: torch.Tensor,
    loss: PerceptualLoss,
    iterations: int = 300,
    optimizer: str = "lbfgs",
    init: str = "content",
    lr: float | None = None,
    seed: int = 0,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    report_every: int = 25,
    snapshots: dict[int, torch.Tensor] | None = None,
) -> torch.Tensor:
    """(3, H, W) uint8 photo -> (3, H, W) uint8 image minimizing ``loss`` (its style).

    ``iterations`` counts loss evaluations for L-BFGS and steps for Adam (lr 10
    in 0-255 pixel units by default; L-BFGS uses 1 with a strong-Wolfe line
    search). ``progress(iteration, losses)`` is called every ``report_every``.
    ``snapshots``: a dict whose keys are iteration counts; filled with the best
    image (lowest loss, uint8) seen up to each of them (e.g. {50: None, 100: None}).
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    device = next(loss.parameters()).device
    target = content.to(device).float().unsqueeze(0)  # (1, 3, H, W), 0-255
    if init == "content":
        start = target.clone()
    else:
        g = torch.Generator(device="cpu").manual_seed(seed)
        start = (torch.rand(target.shape, generator=g) * 255).to(device)
    image = start.requires_grad_(True)
    count = 0
    last: dict[str, float] = {}
    # L-BFGS evaluates trial points in its line search, some worse than the
    # current iterate: snapshots keep the best image seen so far.
    best_loss, best_image = float("inf"), image.detach().clone()

    def closure() -> torch.Tensor:
        nonlocal count, last, best_loss, best_image
        with torch.no_grad():
            # Stay displayable: the loss is measured on the image that will be saved,
            # not on pixels outside 0-255 that clamping would change afterwards.
            image.clamp_(0, 255)
        opt.zero_grad(set_to_none=True)
        losses = loss(image, target)
        losses["total"].backward()
        count += 1
        if snapshots is not None:
            if losses["total"].item() < best_loss:
                best_loss, best_image = losses["total"].item(), image.detach().clone()
            if count in snapshots:
                snapshots[count] = _to_uint8(best_image)
        if progress is not None and (count % report_every == 0 or count == iterations):
            last = {k: float(v.detach()) for k, v in losses.items() if "/" not in k}
            progress(count, last)
        return losses["total"]

    if optimizer == "lbfgs":
        # L-BFGS ends early when its line search stalls (clamping makes the loss
        # non-smooth at 0 and 255); restart it until the evaluation budget is spent.
        while count < iterations:
            before = count
            opt = torch.optim.LBFGS(
                [image], lr=lr or 1.0, max_iter=iterations - count, history_size=50,
                line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0,
            )  # fmt: skip
            opt.step(closure)
            if count - before <= 1:  # no progress possible from here
                break
    else:
        opt = torch.optim.Adam([image], lr=lr or 10.0)
        for _ in range(iterations):
            opt.step(closure)
    return _to_uint8(image)


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) float 0-255 -> (3, H, W) uint8 on the CPU."""
    return image.detach()[0].clamp(0, 255).round().to(torch.uint8).cpu()
