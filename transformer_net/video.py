"""Video stylization: decode, stylize frames in batches, encode, keep the audio.

A feed-forward network (Johnson et al. 2016) stylizes every frame on its own.
Three threads overlap the work: one demuxes and decodes frames (resized to the
output size) into a bounded queue, the caller's thread runs the model on
batches of frames, and one encodes and muxes. Opening, decoding and encoding
(and copying the audio) is ``video_io.py``. The output is written to a
temporary file that is renamed only when complete (``atomic.atomic_path``).

Stylizing frames independently flickers: small changes of the input (noise,
compression artefacts, lighting) change the stylized texture everywhere.
Ruder et al. 2016 ("Artistic style transfer for videos") fix this with an
optical-flow temporal loss; here a much cheaper post-filter is offered,
:class:`TemporalSmoother`, an exponential moving average of the stylized
frames gated by how much the *input* pixel changed, and :func:`flicker`
measures the effect.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_path
from .errors import ConfigError, VideoError
from .image import to_uint8
from .inference import Stylizer
from .video_io import InputVideo, OutputVideo, require_av

Finish = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class TemporalSmoother:
    """Motion-gated exponential moving average of stylized frames, against flicker.

    out_t = w * out_{t-1} + (1 - w) * stylized_t, per pixel, with
    w = strength * clamp(1 - |in_t - in_{t-1}| / motion_threshold, 0, 1), where
    |in_t - in_{t-1}| is the input change of that pixel (mean over RGB, 0-255).
    Where the input is still, the output keeps most of the previous output (the
    texture stops boiling); where it moved by ``motion_threshold`` levels or
    more, the new stylized pixel is taken as is, so moving objects leave no
    ghost trail. ``strength`` 0 is off; 0.5-0.8 is a useful range.
    """

    def __init__(self, *, strength: float, motion_threshold: float = 24.0):
        if not 0.0 <= strength < 1.0:
            raise ConfigError(f"temporal smoothing must be in [0, 1), got {strength}")
        if motion_threshold <= 0:
            raise ConfigError(f"motion_threshold must be > 0, got {motion_threshold}")
        self.strength = strength
        self.motion_threshold = motion_threshold
        self._prev_in: torch.Tensor | None = None  # (3, H, W) float
        self._prev_out: torch.Tensor | None = None  # (3, H, W) float, unrounded

    def __call__(self, inputs: torch.Tensor, stylized: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 input frames and their stylized frames -> smoothed uint8."""
        if self.strength == 0:
            return stylized
        out = torch.empty_like(stylized)
        for i in range(inputs.shape[0]):
            x, y = inputs[i].float(), stylized[i].float()  # (3, H, W)
            if self._prev_out is not None:
                change = (x - self._prev_in).abs().mean(0, keepdim=True)  # (1, H, W)
                w = self.strength * (1 - change / self.motion_threshold).clamp_(0, 1)
                y = w * self._prev_out + (1 - w) * y
            self._prev_in, self._prev_out = x, y
            out[i] = to_uint8(y)
        return out


def flicker(
    frames_in: torch.Tensor | Sequence[torch.Tensor],
    frames_out: torch.Tensor | Sequence[torch.Tensor],
) -> float:
    """Temporal change of the output relative to that of the input.

    mean |out_t - out_{t-1}| / mean |in_t - in_{t-1}| over all consecutive
    frames (T, 3, H, W; any dtype, 0-255). About 1 when the stylized video
    changes as much as the input does; flickering stylization is well above
    1. ``nan`` when the input does not change at all.
    """
    a = torch.stack(list(frames_in)) if not torch.is_tensor(frames_in) else frames_in
    b = torch.stack(list(frames_out)) if not torch.is_tensor(frames_out) else frames_out
    if a.shape != b.shape:
        raise ValueError(f"input {tuple(a.shape)} and output {tuple(b.shape)} frames differ")
    if a.shape[0] < 2:
        raise ValueError("flicker needs at least two frames")
    a, b = a.float(), b.float()
    d_in = (a[1:] - a[:-1]).abs().mean().item()
    d_out = (b[1:] - b[:-1]).abs().mean().item()
    return d_out / d_in if d_in > 0 else float("nan")


@dataclass
class VideoReport:
    """What :func:`stylize_video` wrote."""

    frames: int
    expected_frames: int | None  # from the container header or duration; None if unknown
    size: tuple[int, int]  # (W, H)
    fps: Fraction
    codec: str
    audio: str  # "none", "copied (aac)" or "re-encoded (opus -> aac)"
    seconds: float


class _Pipeline:
    """Bounded queues between threads; the first error stops every stage."""

    def __init__(self, depth: int):
        self.frames: queue.Queue = queue.Queue(maxsize=depth)  # decoder -> model
        self.encode: queue.Queue = queue.Queue(maxsize=depth)  # model -> encoder
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def fail(self, e: BaseException) -> None:
        if self.error is None:
            self.error = e
        self.stop.set()

    def put(self, q: queue.Queue, item) -> bool:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self, q: queue.Queue):
        while not self.stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        raise _Stopped

    def thread(self, fn: Callable[[], None]) -> threading.Thread:
        """A started daemon thread running ``fn``; its error (if any) stops the pipeline."""

        def run() -> None:
            try:
                fn()
            except _Stopped:
                pass
            except BaseException as e:  # noqa: BLE001 - handed to the main thread
                self.fail(e)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


class _Stopped(Exception):
    """Raised in a stage when another one has failed (or the work is done)."""


def stylize_video(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    stylizer: Stylizer,
    *,
    max_side: int | None = None,
    scale: float | None = None,
    batch_size: int = 1,
    crf: int = 18,
    temporal_smoothing: float = 0.0,
    progress: Callable[[int, int | None], None] | None = None,
    postprocess: Finish | None = None,
    overwrite: bool = True,
) -> VideoReport:
    """Stylize every frame of ``src`` with ``stylizer`` (its ``batch``) into ``dst``.

    Keeps the frame rate and the size (after ``max_side``/``scale``, rounded
    down to even numbers for yuv420p) and the audio. ``progress(done, total)``
    is called after each batch (total is None when the container does not
    say). ``postprocess(frame, stylized)`` (uint8 (3, H, W) each) finishes every
    frame, e.g. ``color.postprocess`` for --strength and --preserve-color.
    Raises :class:`VideoError` naming the file; ``dst`` then does not exist.
    ``overwrite=False``: a ``dst`` that appeared meanwhile (another process) is kept:
    :class:`OutputExistsError`.
    """
    src, dst = Path(src), Path(dst)
    av = require_av(src)
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    finish = _finisher(postprocess, temporal_smoothing)
    start = time.perf_counter()
    with InputVideo(av, src) as inp:
        size = inp.output_size(max_side=max_side, scale=scale)
        with atomic_path(dst, overwrite=overwrite) as tmp:
            out = OutputVideo(av, tmp, name=dst, size=size, rate=inp.rate, crf=crf, audio=inp.audio)
            try:
                frames = _stylize_frames(
                    inp, out, stylizer, finish, batch_size=batch_size, progress=progress
                )
                out.finish()
            finally:
                out.close()
            if frames == 0:
                raise VideoError(f"{src}: no video frames could be decoded")
    return VideoReport(
        frames=frames,
        expected_frames=inp.expected_frames,
        size=size,
        fps=inp.rate,
        codec=out.codec,
        audio=out.audio_summary,
        seconds=time.perf_counter() - start,
    )


def _finisher(postprocess: Finish | None, temporal_smoothing: float) -> Finish:
    """(B, 3, H, W) frames and their stylization -> the frames to encode."""
    smoother = TemporalSmoother(strength=temporal_smoothing) if temporal_smoothing else None

    def finish(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if postprocess is not None:  # strength, color preservation: per frame
            y = torch.stack([postprocess(a, b) for a, b in zip(x, y, strict=True)])
        return smoother(x, y) if smoother is not None else y

    return finish


def _stylize_frames(
    inp: InputVideo,
    out: OutputVideo,
    stylizer: Stylizer,
    finish: Finish,
    *,
    batch_size: int,
    progress: Callable[[int, int | None], None] | None,
) -> int:
    """Decode (thread) -> model (this thread) -> encode (thread); returns the frame count."""
    pipe = _Pipeline(depth=max(4, 2 * batch_size))

    def decode() -> None:
        for item in inp.items(out.size):  # ("video", (H, W, 3) uint8) or ("audio", packet)
            if not pipe.put(pipe.frames, item):
                return
        pipe.put(pipe.frames, None)

    def encode() -> None:
        while (item := pipe.get(pipe.encode)) is not None:
            kind, data = item
            if kind == "audio":
                out.write_audio(data)
            else:
                out.write_frames(data)  # (B, H, W, 3) uint8

    threads = [pipe.thread(decode), pipe.thread(encode)]
    done = 0
    try:
        batch: list[np.ndarray] = []
        while (item := pipe.get(pipe.frames)) is not None:
            if item[0] == "audio":
                pipe.put(pipe.encode, item)
                continue
            batch.append(item[1])
            if len(batch) == batch_size:
                done += _stylize_batch(pipe, stylizer, finish, batch)
                if progress is not None:
                    progress(done, inp.expected_frames)
        if batch:
            done += _stylize_batch(pipe, stylizer, finish, batch)
            if progress is not None:
                progress(done, inp.expected_frames)
        pipe.put(pipe.encode, None)
        threads[1].join()
    except _Stopped:
        pass
    except BaseException as e:
        pipe.fail(e)
    finally:
        pipe.stop.set()
        for t in threads:
            t.join(timeout=10)
    if pipe.error is not None:
        raise pipe.error
    return done


def _stylize_batch(pipe: _Pipeline, stylizer: Stylizer, finish: Finish, batch: list) -> int:
    """Stylize the (H, W, 3) frames in ``batch`` (emptied) for the encoder; returns their count."""
    x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)  # (B, 3, H, W) uint8
    y = finish(x, stylizer.batch(x))
    pipe.put(pipe.encode, ("video", y.permute(0, 2, 3, 1).contiguous().numpy()))
    n = len(batch)
    batch.clear()
    return n
