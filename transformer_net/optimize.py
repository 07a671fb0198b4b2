"""Style transfer by optimizing the image itself (Gatys et al. 2016).

"Image Style Transfer Using Convolutional Neural Networks", CVPR 2016: start from
the photo (or noise) and minimize the same perceptual loss the feed-forward
networks are trained with (``loss.PerceptualLoss``: same layers, Gram matrices,
weights and pixel conventions), with L-BFGS or Adam. Slow (hundreds of VGG
passes per image) but the quality yardstick for the trained networks.

:class:`GatysStylizer` puts it behind the ``inference.Stylizer`` interface
(``stylize.py --method optimize``), with the luminance-only transfer of Gatys
et al. 2017 for ``preserve_color``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from PIL import Image

from .color import gray_image, luminance, match_luminance
from .errors import ConfigError
from .image import load_image, pil_to_tensor, resized_size, tensor_to_pil, to_uint8
from .inference import Stylizer, pick_device
from .loss import PerceptualLoss
from .vgg import DOWNLOADED_WEIGHTS, default_preprocessing, fetch_vgg16

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise")
Progress = Callable[[int, dict[str, float]], None]


class Cancelled(Exception):
    """Raised by a ``progress`` callback to stop an optimization (not an error: a request)."""


def check_options(*, iterations: int, optimizer: str, init: str) -> None:
    """:class:`ConfigError` for an unknown optimizer or start, or fewer than 1 iteration."""
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if init not in INITS:
        raise ConfigError(f"init must be one of {INITS}, got {init!r}")
    if iterations < 1:
        raise ConfigError(f"iterations must be >= 1, got {iterations}")


# The offline advice when the caller gives none: this module's own arguments.
LOCAL_VGG_HINT = "vgg_weights=/path/vgg16.pth with preprocessing={preprocessing!r}"


def perceptual_loss(
    style: torch.Tensor,
    *,
    vgg_weights: str | os.PathLike = "caffe",
    preprocessing: str | None = None,
    device: torch.device | str = "cpu",
    hint: str | None = None,
    **loss_args,
) -> PerceptualLoss:
    """The training loss with ``style`` ((3, H, W), 0-255) as its target, on ``device``.

    ``preprocessing=None`` follows the weights' name (before a name becomes a
    file). Named weights (``caffe``, ``imagenet``) are downloaded once; offline,
    the error ends with ``hint``: how the calling tool takes a local file instead
    (``{preprocessing}`` in it is filled in, e.g. ``"--vgg-weights /path/vgg16.pth
    --preprocessing {preprocessing}"``). Without one it names this function's own
    arguments: the library cannot know which tool, if any, is calling (the web app
    has no ``--preprocessing``). ``loss_args``: the other ``PerceptualLoss`` arguments.
    """
    preprocessing = preprocessing or default_preprocessing(vgg_weights)
    weights = str(vgg_weights)
    if weights in DOWNLOADED_WEIGHTS:
        hint = (hint or LOCAL_VGG_HINT).format(preprocessing=preprocessing)
        weights = str(fetch_vgg16(weights, hint=hint))
    return PerceptualLoss(
        style_image=style.float(), vgg_weights=weights, preprocessing=preprocessing, **loss_args
    ).to(device)


class _Evaluations:
    """Counts loss evaluations, reports progress and keeps the best image for snapshots.

    L-BFGS evaluates trial points in its line search, some worse than the
    current iterate: snapshots keep the best image seen so far.
    """

    def __init__(
        self,
        start: torch.Tensor,
        *,
        iterations: int,
        progress: Progress | None,
        report_every: int,
        snapshots: dict[int, torch.Tensor | None] | None,
    ):
        self.count = 0
        self.iterations, self.progress, self.report_every = iterations, progress, report_every
        self.snapshots = snapshots
        self.best_loss, self.best_image = float("inf"), start.detach().clone()  # (1, 3, H, W)

    def record(self, image: torch.Tensor, losses: dict[str, torch.Tensor]) -> None:
        self.count += 1
        if self.snapshots is not None:
            if losses["total"].item() < self.best_loss:
                self.best_loss, self.best_image = losses["total"].item(), image.detach().clone()
            if self.count in self.snapshots:
                self.snapshots[self.count] = to_uint8(self.best_image[0]).cpu()
        last = self.count % self.report_every == 0 or self.count == self.iterations
        if self.progress is not None and last:
            self.progress(
                self.count, {k: float(v.detach()) for k, v in losses.items() if "/" not in k}
            )


def optimize_image(
    *,
    content: torch.Tensor,
    loss: PerceptualLoss,
    iterations: int = 300,
    optimizer: str = "lbfgs",
    init: str = "content",
    lr: float | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    report_every: int = 25,
    snapshots: dict[int, torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """(3, H, W) uint8 photo -> (3, H, W) uint8 image minimizing ``loss`` (its style).

    ``iterations`` counts loss evaluations for L-BFGS and steps for Adam (lr 10
    in 0-255 pixel units by default; L-BFGS uses 1 with a strong-Wolfe line
    search). ``progress(iteration, losses)`` is called every ``report_every``;
    an exception it raises (:class:`Cancelled`, for one) stops the optimization
    and propagates: that is how a caller cancels (the web app's Cancel button).
    ``snapshots``: a dict whose keys are iteration counts; filled with the best
    image (lowest loss, uint8) seen up to each of them (e.g. {50: None, 100: None}).
    """
    check_options(iterations=iterations, optimizer=optimizer, init=init)
    device = next(loss.parameters()).device
    target = content.to(device).float().unsqueeze(0)  # (1, 3, H, W), 0-255
    if init == "content":
        start = target.clone()
    else:
        g = torch.Generator(device="cpu").manual_seed(seed)
        start = (torch.rand(target.shape, generator=g) * 255).to(device)
    image = start.requires_grad_(True)
    evaluations = _Evaluations(
        image,
        iterations=iterations,
        progress=progress,
        report_every=report_every,
        snapshots=snapshots,
    )

    def closure() -> torch.Tensor:
        with torch.no_grad():
            # Stay displayable: the loss is measured on the image that will be saved,
            # not on pixels outside 0-255 that clamping would change afterwards.
            image.clamp_(0, 255)
        image.grad = None
        losses = loss(image, target)
        losses["total"].backward()
        evaluations.record(image, losses)
        return losses["total"]

    _minimize(image, closure, optimizer=optimizer, lr=lr, evaluations=evaluations)
    return to_uint8(image[0]).cpu()


def _minimize(
    image: torch.Tensor,
    closure: Callable[[], torch.Tensor],
    *,
    optimizer: str,
    lr: float | None,
    evaluations: _Evaluations,
) -> None:
    """Run ``optimizer`` on ``image`` until ``evaluations.iterations`` are spent."""
    iterations = evaluations.iterations
    if optimizer == "adam":
        opt = torch.optim.Adam([image], lr=lr or 10.0)
        for _ in range(iterations):
            opt.step(closure)
        return
    # L-BFGS ends early when its line search stalls (clamping makes the loss
    # non-smooth at 0 and 255); restart it until the evaluation budget is spent.
    while evaluations.count < iterations:
        before = evaluations.count
        opt = torch.optim.LBFGS(
            [image],
            lr=lr or 1.0,
            max_iter=iterations - evaluations.count,
            history_size=50,
            line_search_fn="strong_wolfe",
            tolerance_grad=0.0,
            tolerance_change=0.0,
        )
        opt.step(closure)
        if evaluations.count - before <= 1:  # no progress possible from here
            break


class GatysStylizer(Stylizer):
    """Per-image optimization (minutes per image) behind the ``inference.Stylizer`` interface.

    ``style_image`` (a file, or a (3, H, W) uint8 tensor such as a model file's
    style thumbnail; its longer side resized to at most ``style_size``)
    and the loss arguments (``vgg_weights``, ``preprocessing``, ``*_weight``;
    ``style_weight=None``: the default of the weights' convention) make the
    target; ``iterations``, ``optimizer`` and ``init`` go to :func:`optimize_image`,
    ``progress(iteration, losses)`` (every ``report_every`` evaluations) too.
    Bad options are :class:`ConfigError`,
    raised before the VGG weights load. ``vgg_hint``: the calling tool's way to
    pass a local VGG-16 file, ending the offline error (:func:`perceptual_loss`).

    ``preserve_color``: luminance-only transfer (Gatys et al. 2017, sec. 5.1):
    the photo's Y is optimized against the style's Y matched to the photo's
    mean and std, and the result is that gray image; ``color.postprocess``
    (``preserve_color=True``) then puts the photo's chrominance back.
    """

    dtype = torch.float32
    num_styles = 1
    style_names = None
    style = None
    supports_video = False

    def __init__(
        self,
        style_image: str | os.PathLike | torch.Tensor,
        *,
        device: str = "auto",
        style_size: int | None = None,
        vgg_weights: str | os.PathLike = "caffe",
        preprocessing: str | None = None,
        content_weight: float = 1.0,
        style_weight: float | None = None,
        tv_weight: float = 0.0,
        iterations: int = 300,
        optimizer: str = "lbfgs",
        init: str = "content",
        preserve_color: bool = False,
        progress: Progress | None = None,
        report_every: int = 25,
        vgg_hint: str | None = None,
    ):
        check_options(iterations=iterations, optimizer=optimizer, init=init)
        self.iterations, self.optimizer, self.init = iterations, optimizer, init
        self.preserve_color, self.progress = preserve_color, progress
        self.report_every = report_every
        self.device = pick_device(device)
        if isinstance(style_image, torch.Tensor):
            self.style_image = _resized(style_image, style_size)  # (3, H, W) uint8
        else:
            self.style_image = load_image(style_image, max_side=style_size)
        self.loss = perceptual_loss(
            self.style_image,
            vgg_weights=vgg_weights,
            preprocessing=preprocessing,
            device=self.device,
            content_weight=content_weight,
            style_weight=style_weight,
            tv_weight=tv_weight,
            hint=vgg_hint,  # the calling tool's way to pass a local file (perceptual_loss)
        )

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) uint8 photo -> (3, H, W) uint8 optimized image (gray with preserve_color)."""
        if self.preserve_color:
            content_y = luminance(image)  # (H, W)
            self.loss.set_style(gray_image(match_luminance(luminance(self.style_image), content_y)))
            image = gray_image(content_y)
        return optimize_image(
            content=image,
            loss=self.loss,
            iterations=self.iterations,
            optimizer=self.optimizer,
            init=self.init,
            progress=self.progress,
            report_every=self.report_every,
        )

    def batch(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 -> (B, 3, H, W) uint8: one optimization per image."""
        return torch.stack([self(frame) for frame in frames])


def _resized(image: torch.Tensor, max_side: int | None) -> torch.Tensor:
    """(3, H, W) uint8, its longer side scaled to ``max_side`` as ``load_image`` does."""
    size = resized_size((image.shape[2], image.shape[1]), max_side=max_side)
    if size == (image.shape[2], image.shape[1]):
        return image
    return pil_to_tensor(tensor_to_pil(image).resize(size, Image.Resampling.LANCZOS))
