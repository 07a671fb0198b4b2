"""Video stylization: decode, stylize frames in batches, encode, keep the audio.

A feed-forward network (Johnson et al. 2016) stylizes every frame on its own.
Three threads overlap the work: one demuxes and decodes frames (resized to the
output size) into a bounded queue, the caller's thread runs the model on
batches of frames, and one encodes and muxes. Audio packets are copied to the
output unchanged when the container accepts their codec, else re-encoded (AAC,
or Opus for WebM). The output is written to a temporary file that is renamed
only when complete (``atomic.atomic_path``).

Stylizing frames independently flickers: small changes of the input (noise,
compression artefacts, lighting) change the stylized texture everywhere.
Ruder et al. 2016 ("Artistic style transfer for videos") fix this with an
optical-flow temporal loss; here a much cheaper post-filter is offered,
:class:`TemporalSmoother`, an exponential moving average of the stylized
frames gated by how much the *input* pixel changed, and :func:`flicker`
measures the effect.

PyAV (``pip install "transformer-net[video]"``) is imported only when a video
is processed, so image stylization does not need it.
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
from .errors import VideoError, first_line
from .image import resized_size

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"})
# Encoders tried in order; the first that PyAV has and the container accepts wins
# (WebM takes only VP8/VP9/AV1, so it gets VP9).
VIDEO_ENCODERS = ("libx264", "mpeg4", "libvpx-vp9", "libvpx")
AUDIO_ENCODERS = ("aac", "libopus", "opus")
INSTALL_HINT = 'video needs PyAV: pip install "transformer-net[video]"'


def is_video_file(path: str | os.PathLike) -> bool:
    """Whether the file name has a video extension (the content is not checked)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def require_av(path: str | os.PathLike):
    """Import PyAV, or raise :class:`VideoError` saying how to install it."""
    try:
        import av
    except ImportError:
        raise VideoError(f"{path}: {INSTALL_HINT}") from None
    return av


def video_frame_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(W, H) of the first video stream, from the header; None if unreadable or no PyAV.

    For checks before the model loads; reading the video reports the actual error.
    """
    try:
        import av

        with av.open(str(path)) as container:
            ctx = container.streams.video[0].codec_context
            return (ctx.width, ctx.height) if ctx.width and ctx.height else None
    except Exception:  # noqa: BLE001 - ImportError, FFmpeg errors, no video stream
        return None


def even_size(size: tuple[int, int]) -> tuple[int, int]:
    """(W, H) rounded down to even numbers (at least 2): yuv420p stores 2x2 chroma blocks."""
    w, h = size
    return max(2, w - w % 2), max(2, h - h % 2)


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
            raise ValueError(f"temporal smoothing must be in [0, 1), got {strength}")
        if motion_threshold <= 0:
            raise ValueError(f"motion_threshold must be > 0, got {motion_threshold}")
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
            out[i] = y.round().clamp_(0, 255).to(torch.uint8)
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


def _open_input(av, path: Path):
    try:
        container = av.open(str(path))
    except FileNotFoundError:
        raise VideoError(f"{path}: file not found") from None
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise VideoError(f"{path}: cannot read video ({first_line(e)})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: no video stream")
    return container


def _frame_rate(stream) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate).limit_denominator(1001 * 1000)
    raise ValueError("unknown frame rate")


def _frame_count(container, stream, rate: Fraction) -> int | None:
    """Frames in the stream: from the header, else estimated from the duration."""
    if stream.frames:
        return int(stream.frames)
    if stream.duration is not None and stream.time_base is not None:
        return round(float(stream.duration * stream.time_base * rate))
    if container.duration:
        return round(container.duration / 1_000_000 * float(rate))
    return None


def _add_video_stream(out, av, *, dst: Path, size: tuple[int, int], rate: Fraction, crf: int):
    """The first encoder of VIDEO_ENCODERS available here and accepted by the container."""
    supported = _supported_codecs(out)
    for name in VIDEO_ENCODERS:
        try:
            codec = av.Codec(name, "w")
        except (av.error.FFmpegError, ValueError):
            continue  # not in this PyAV/FFmpeg build
        if supported is not None and codec.canonical_name not in supported:
            continue
        options = {}
        if name == "libx264":
            options = {"crf": str(crf), "preset": "medium"}
        elif name.startswith("libvpx"):
            options = {"crf": str(crf), "b": "0"}  # constant quality
        stream = out.add_stream(name, rate=rate, options=options)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = 1 / rate
        stream.codec_context.time_base = 1 / rate
        if name == "mpeg4" and hasattr(stream.codec_context, "qscale"):  # not in every PyAV
            # No CRF: fixed quantizer; q 2-31 (lower is better), crf 18 -> 3.
            stream.codec_context.qscale = max(2, min(31, round(crf / 6)))
        return stream, name
    raise VideoError(f"{dst}: no video encoder for {out.format.name} ({', '.join(VIDEO_ENCODERS)})")


def _supported_codecs(out) -> set[str] | None:
    """Codecs the output container accepts; None if this PyAV cannot tell (then try)."""
    codecs = getattr(out, "supported_codecs", None)
    return set(codecs) if codecs is not None else None


class _AudioSink:
    """Copies the input's audio packets to the output, or re-encodes them if it must."""

    def __init__(self, out, av, in_stream, *, dst: Path):
        self.out, self.in_stream = out, in_stream
        name = in_stream.codec_context.name
        canonical = in_stream.codec_context.codec.canonical_name
        self.encode_stream = None
        supported = _supported_codecs(out)
        if supported is None or canonical in supported:
            add = getattr(out, "add_stream_from_template", None)
            self.stream = add(in_stream) if add else out.add_stream(template=in_stream)
            self.summary = f"copied ({canonical})"
            return
        for enc in AUDIO_ENCODERS:
            try:
                codec = av.Codec(enc, "w")
            except (av.error.FFmpegError, ValueError):
                continue
            if codec.canonical_name in supported:
                ctx = in_stream.codec_context
                self.stream = out.add_stream(enc, rate=ctx.sample_rate or 48000)
                if ctx.layout is not None and ctx.layout.nb_channels <= 2:
                    self.stream.layout = ctx.layout
                self.encode_stream = self.stream
                self.summary = f"re-encoded ({name} -> {codec.canonical_name})"
                return
        raise VideoError(f"{dst}: audio {name} cannot go into {out.format.name}")

    def write(self, packet) -> None:
        if self.encode_stream is None:
            packet.stream = self.stream
            self.out.mux(packet)
            return
        for frame in packet.decode():
            frame.pts = None  # the encoder's resampler numbers the samples
            self.out.mux(self.encode_stream.encode(frame))

    def flush(self) -> None:
        if self.encode_stream is not None:
            self.out.mux(self.encode_stream.encode(None))


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


class _Stopped(Exception):
    pass


def stylize_video(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    stylizer,
    *,
    max_side: int | None = None,
    scale: float | None = None,
    batch_size: int = 1,
    crf: int = 18,
    temporal_smoothing: float = 0.0,
    progress: Callable[[int, int | None], None] | None = None,
    postprocess: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> VideoReport:
    """Stylize every frame of ``src`` with ``stylizer`` (an ``inference.Stylizer``) into ``dst``.

    Keeps the frame rate and the size (after ``max_side``/``scale``, rounded
    down to even numbers for yuv420p) and the audio. ``progress(done, total)``
    is called after each batch (total is None when the container does not
    say). ``postprocess(frame, stylized)`` (uint8 (3, H, W) each) finishes every
    frame, e.g. ``color.postprocess`` for --strength and --preserve-color.
    Raises :class:`VideoError` naming the file; ``dst`` then does not exist.
    """
    src, dst = Path(src), Path(dst)
    av = require_av(src)
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    smoother = TemporalSmoother(strength=temporal_smoothing) if temporal_smoothing else None

    def finish(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) frames and their stylization -> the frames to encode."""
        if postprocess is not None:  # strength, color preservation: per frame
            y = torch.stack([postprocess(a, b) for a, b in zip(x, y, strict=True)])
        return smoother(x, y) if smoother is not None else y

    start = time.perf_counter()
    inp = _open_input(av, src)
    try:
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"  # FFmpeg's own frame threads
        ain = inp.streams.audio[0] if inp.streams.audio else None
        try:
            rate = _frame_rate(vin)
            w, h = vin.codec_context.width, vin.codec_context.height
            if not w or not h:
                raise ValueError("unknown frame size")
            size = even_size(resized_size((w, h), max_side=max_side, scale=scale))
        except ValueError as e:
            raise VideoError(f"{src}: {e}") from None
        total = _frame_count(inp, vin, rate)
        with atomic_path(dst) as tmp:
            try:
                out = av.open(str(tmp), "w")
            except (av.error.FFmpegError, OSError, ValueError) as e:
                raise VideoError(f"{dst}: cannot write video ({first_line(e)})") from None
            try:
                vout, codec = _add_video_stream(out, av, dst=dst, size=size, rate=rate, crf=crf)
                audio = _AudioSink(out, av, ain, dst=dst) if ain is not None else None
                frames = _run(
                    av, inp, vin, ain, out, vout, audio, stylizer, finish, src=src, dst=dst,
                    size=size, batch_size=batch_size, total=total, progress=progress,
                )  # fmt: skip
                out.close()  # writes the trailer (the MP4 index): errors count
            except av.error.FFmpegError as e:
                raise VideoError(f"{dst}: cannot write video ({first_line(e)})") from None
            finally:
                try:
                    out.close()  # no-op when closed; after an error the file is deleted anyway
                except Exception:  # noqa: BLE001
                    pass
            if frames == 0:
                raise VideoError(f"{src}: no video frames could be decoded")
    finally:
        inp.close()
    return VideoReport(
        frames=frames,
        expected_frames=total,
        size=size,
        fps=rate,
        codec=codec,
        audio=audio.summary if audio is not None else "none",
        seconds=time.perf_counter() - start,
    )


def _run(av, inp, vin, ain, out, vout, audio, stylizer, finish, *, src, dst, size, batch_size,
         total, progress) -> int:  # fmt: skip
    """Decode (thread) -> model (this thread) -> encode (thread); returns the frame count."""
    pipe = _Pipeline(depth=max(4, 2 * batch_size))
    width, height = size
    time_base = vout.codec_context.time_base

    def decode() -> None:
        try:
            streams = [vin] + ([ain] if ain is not None else [])
            for packet in inp.demux(streams):
                if packet.stream.type == "audio":
                    if packet.dts is not None and not pipe.put(pipe.frames, ("audio", packet)):
                        return
                    continue
                for frame in packet.decode():
                    rgb = frame.to_ndarray(
                        format="rgb24", width=width, height=height, interpolation="AREA"
                    )  # (H, W, 3) uint8
                    if not pipe.put(pipe.frames, ("video", rgb)):
                        return
            pipe.put(pipe.frames, None)
        except av.error.FFmpegError as e:
            pipe.fail(VideoError(f"{src}: cannot decode video ({first_line(e)})"))
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            pipe.fail(e)

    def encode() -> None:
        n = 0
        try:
            while True:
                item = pipe.get(pipe.encode)
                if item is None:
                    break
                kind, data = item
                if kind == "audio":
                    audio.write(data)
                    continue
                for rgb in data:  # (H, W, 3) uint8
                    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                    frame.pts, frame.time_base = n, time_base
                    n += 1
                    out.mux(vout.encode(frame))
            out.mux(vout.encode(None))
            if audio is not None:
                audio.flush()
        except _Stopped:
            pass
        except av.error.FFmpegError as e:
            pipe.fail(VideoError(f"{dst}: cannot write video ({first_line(e)})"))
        except BaseException as e:  # noqa: BLE001
            pipe.fail(e)

    threads = [threading.Thread(target=f, daemon=True) for f in (decode, encode)]
    for t in threads:
        t.start()
    done = 0
    try:
        batch: list[np.ndarray] = []

        def run_batch() -> None:
            nonlocal done
            x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)  # (B, 3, H, W) uint8
            if hasattr(stylizer, "frames"):  # Stylizer: splits a batch that runs out of memory
                y = stylizer.frames(x)
            elif hasattr(stylizer, "batch"):
                y = stylizer.batch(x)
            else:  # ONNX / TorchScript runners take one frame at a time
                y = torch.stack([stylizer(frame) for frame in x])
            y = finish(x, y)
            pipe.put(pipe.encode, ("video", y.permute(0, 2, 3, 1).contiguous().numpy()))
            done += len(batch)
            batch.clear()
            if progress is not None:
                progress(done, total)

        while True:
            item = pipe.get(pipe.frames)
            if item is None:
                break
            kind, data = item
            if kind == "audio":
                pipe.put(pipe.encode, item)
            else:
                batch.append(data)
                if len(batch) == batch_size:
                    run_batch()
        if batch:
            run_batch()
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


def read_frames(
    path: str | os.PathLike,
    *,
    max_side: int | None = None,
    scale: float | None = None,
    max_frames: int | None = None,
) -> tuple[torch.Tensor, Fraction]:
    """The first ``max_frames`` frames as (T, 3, H, W) uint8 RGB, and the frame rate.

    Sized like :func:`stylize_video` sizes its output (even width and height).
    """
    path = Path(path)
    av = require_av(path)
    container = _open_input(av, path)
    try:
        stream = container.streams.video[0]
        rate = _frame_rate(stream)
        w, h = stream.codec_context.width, stream.codec_context.height
        width, height = even_size(resized_size((w, h), max_side=max_side, scale=scale))
        frames = []
        for frame in container.decode(stream):
            rgb = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
            frames.append(torch.from_numpy(rgb).permute(2, 0, 1))
            if max_frames is not None and len(frames) >= max_frames:
                break
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: {first_line(e)}") from None
    finally:
        container.close()
    if not frames:
        raise VideoError(f"{path}: no video frames could be decoded")
    return torch.stack(frames), rate
