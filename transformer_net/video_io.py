"""Video files through PyAV (FFmpeg): open, decode, encode, and carry the audio over.

:class:`InputVideo` is an opened file: its first video stream (frames decoded
and resized to the output size, as (H, W, 3) uint8 RGB arrays), its first audio
stream, frame rate and frame count. :class:`OutputVideo` writes one: the first
encoder of :data:`VIDEO_ENCODERS` that the container accepts, and the input's
audio packets copied unchanged when the container accepts their codec, else
re-encoded (AAC, or Opus for WebM). FFmpeg's errors become :class:`VideoError`
naming the file. The frame loop that stylizes (Johnson et al. 2016, one frame
at a time) is ``video.py``.

PyAV (``pip install "transformer-net[video]"``) is imported only when a video
is processed, so image stylization does not need it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

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


class InputVideo:
    """A video file opened for reading: ``rate``, ``size`` (W, H), ``expected_frames``.

    ``expected_frames`` comes from the container header or the duration (None
    if unknown). Raises :class:`VideoError` naming the file when it cannot be
    opened or has no video stream. A context manager: closes the file.
    """

    def __init__(self, av, path: Path):
        self.av, self.path = av, path
        try:
            self.container = av.open(str(path))
        except FileNotFoundError:
            raise VideoError(f"{path}: file not found") from None
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise VideoError(f"{path}: cannot read video ({first_line(e)})") from None
        try:
            self._read_header()
        except BaseException:
            self.container.close()
            raise

    def _read_header(self) -> None:
        if not self.container.streams.video:
            raise VideoError(f"{self.path}: no video stream")
        self.video = self.container.streams.video[0]
        self.video.thread_type = "AUTO"  # FFmpeg's own frame threads
        streams = self.container.streams
        self.audio = streams.audio[0] if streams.audio else None
        self.rate = _frame_rate(self.video)
        if self.rate is None:
            raise VideoError(f"{self.path}: unknown frame rate")
        w, h = self.video.codec_context.width, self.video.codec_context.height
        if not w or not h:
            raise VideoError(f"{self.path}: unknown frame size")
        self.size = (w, h)
        self.expected_frames = _frame_count(self.container, self.video, self.rate)

    def output_size(
        self, *, max_side: int | None = None, scale: float | None = None
    ) -> tuple[int, int]:
        """(W, H) of the frames to write: resized, then even (yuv420p); VideoError if too large."""
        try:
            return even_size(resized_size(self.size, max_side=max_side, scale=scale))
        except ValueError as e:
            raise VideoError(f"{self.path}: {e}") from None

    def items(self, size: tuple[int, int], *, audio: bool = True) -> Iterator[tuple[str, Any]]:
        """("video", (H, W, 3) uint8 RGB resized to ``size``) and ("audio", packet), in
        file order; audio packets without a timestamp are left out."""
        streams = [self.video] + ([self.audio] if audio and self.audio is not None else [])
        width, height = size
        try:
            for packet in self.container.demux(streams):
                if packet.stream.type == "audio":
                    if packet.dts is not None:
                        yield "audio", packet
                    continue
                for frame in packet.decode():
                    yield (
                        "video",
                        frame.to_ndarray(
                            format="rgb24", width=width, height=height, interpolation="AREA"
                        ),
                    )
        except self.av.error.FFmpegError as e:
            raise VideoError(f"{self.path}: cannot decode video ({first_line(e)})") from None

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> InputVideo:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _frame_rate(stream) -> Fraction | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate).limit_denominator(1001 * 1000)
    return None


def _frame_count(container, stream, rate: Fraction) -> int | None:
    """Frames in the stream: from the header, else estimated from the duration."""
    if stream.frames:
        return int(stream.frames)
    if stream.duration is not None and stream.time_base is not None:
        return round(float(stream.duration * stream.time_base * rate))
    if container.duration:
        return round(container.duration / 1_000_000 * float(rate))
    return None


class OutputVideo:
    """A video file being written at ``path``; errors name ``name`` (the final file).

    ``size`` (W, H, even) and ``rate`` of the frames; ``crf`` the quality of
    constant-quality encoders (H.264, VP9; MPEG-4 Part 2 gets a matching fixed
    quantizer); ``audio`` the input's audio stream, or None. ``codec``: the
    encoder used; ``audio_summary``: "none", "copied (aac)" or "re-encoded
    (aac -> opus)". :meth:`finish` flushes the encoders and writes the trailer
    (the MP4 index); :meth:`close` gives up (the caller deletes the file).
    """

    def __init__(
        self,
        av,
        path: Path,
        *,
        name: Path,
        size: tuple[int, int],
        rate: Fraction,
        crf: int,
        audio=None,
    ):
        self.av, self.name, self.size = av, name, size
        try:
            self.container = av.open(str(path), "w")
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise VideoError(f"{name}: cannot write video ({first_line(e)})") from None
        try:
            with self._writing():
                self.video, self.codec = self._add_video_stream(rate, crf)
                self.audio = _AudioSink(self.container, av, audio, dst=name) if audio else None
        except BaseException:
            self.close()
            raise
        self.audio_summary = self.audio.summary if self.audio is not None else "none"
        self.frames = 0

    @contextmanager
    def _writing(self):
        try:
            yield
        except self.av.error.FFmpegError as e:
            raise VideoError(f"{self.name}: cannot write video ({first_line(e)})") from None

    def _add_video_stream(self, rate: Fraction, crf: int):
        """The first encoder of VIDEO_ENCODERS available here and accepted by the container."""
        av, out = self.av, self.container
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
            stream.width, stream.height = self.size
            stream.pix_fmt = "yuv420p"
            stream.time_base = 1 / rate
            stream.codec_context.time_base = 1 / rate
            if name == "mpeg4" and hasattr(stream.codec_context, "qscale"):  # not in every PyAV
                # No CRF: fixed quantizer; q 2-31 (lower is better), crf 18 -> 3.
                stream.codec_context.qscale = max(2, min(31, round(crf / 6)))
            return stream, name
        raise VideoError(
            f"{self.name}: no video encoder for {out.format.name} ({', '.join(VIDEO_ENCODERS)})"
        )

    def write_frames(self, frames: np.ndarray) -> None:
        """(B, H, W, 3) uint8 RGB frames, numbered on from the last."""
        time_base = self.video.codec_context.time_base
        with self._writing():
            for rgb in frames:  # (H, W, 3)
                frame = self.av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts, frame.time_base = self.frames, time_base
                self.frames += 1
                self.container.mux(self.video.encode(frame))

    def write_audio(self, packet) -> None:
        """An audio packet of the input's audio stream (from :meth:`InputVideo.items`)."""
        with self._writing():
            self.audio.write(packet)

    def finish(self) -> None:
        """Flush the encoders and write the trailer: the file is complete."""
        with self._writing():
            self.container.mux(self.video.encode(None))
            if self.audio is not None:
                self.audio.flush()
            self.container.close()

    def close(self) -> None:
        """Close without error (a no-op after :meth:`finish`); the file may be incomplete."""
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - after an error the file is deleted anyway
            pass


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


def read_frames(
    path: str | os.PathLike,
    *,
    max_side: int | None = None,
    scale: float | None = None,
    max_frames: int | None = None,
) -> tuple[torch.Tensor, Fraction]:
    """The first ``max_frames`` frames as (T, 3, H, W) uint8 RGB, and the frame rate.

    Sized like ``video.stylize_video`` sizes its output (even width and height).
    """
    path = Path(path)
    av = require_av(path)
    frames = []
    with InputVideo(av, path) as video:
        size = video.output_size(max_side=max_side, scale=scale)
        for _, rgb in video.items(size, audio=False):
            frames.append(torch.from_numpy(rgb).permute(2, 0, 1))  # (3, H, W)
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise VideoError(f"{path}: no video frames could be decoded")
    return torch.stack(frames), video.rate
