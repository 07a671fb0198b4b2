"""Video stylization: frame count, rate, size and audio kept; smoothing; errors."""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import SHARED, load_script, write_photo
from tests.test_stylize import run_stylize
from transformer_net import stylize_cli, video_io
from transformer_net.checkpoint import save_model_file
from transformer_net.errors import ConfigError, VideoError
from transformer_net.inference import TorchStylizer
from transformer_net.model import TransformerNet
from transformer_net.video import TemporalSmoother, flicker, stylize_video
from transformer_net.video_io import read_frames

av = pytest.importorskip("av")


def make_video(
    path: Path,
    *,
    frames: int = 16,
    size: tuple[int, int] = (64, 48),
    fps: int = 12,
    vcodec: str = "libx264",
    audio: str | None = "aac",
) -> Path:
    """A gradient with noise (changes every frame) and a red square moving right; a 440 Hz tone."""
    rng = np.random.default_rng(0)
    w, h = size
    out = av.open(str(path), "w")
    video = out.add_stream(vcodec, rate=fps)
    video.width, video.height, video.pix_fmt = w, h, "yuv420p"
    if audio:
        sound = out.add_stream(audio, rate=16000)
        sound.layout = "mono"
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, np.full_like(xx, 128.0)], -1)  # (H, W, 3)
    for i in range(frames):
        img = base + rng.normal(0, 4, base.shape)
        img[10:22, 2 * i : 2 * i + 12] = (250, 20, 20)
        frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
        frame.pts, frame.time_base = i, Fraction(1, fps)
        out.mux(video.encode(frame))
    out.mux(video.encode(None))
    if audio:
        t = np.arange(16000 * frames // fps) / 16000
        samples = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)[None]  # (1, N)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 16000, 0, Fraction(1, 16000)
        out.mux(sound.encode(frame))
        out.mux(sound.encode(None))
    out.close()
    return path


def probe(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = {
            "size": (v.codec_context.width, v.codec_context.height),
            "fps": v.average_rate,
            "codec": v.codec_context.name,
            "audio": [a.codec_context.codec.canonical_name for a in c.streams.audio],
        }
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    info["frames"] = len(frames)
    info["pixels"] = np.stack(frames)  # (T, H, W, 3)
    return info


def main(*args) -> int:
    """stylize.py in this process (no interpreter start-up: faster)."""
    return stylize_cli.main([str(a) for a in args])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.pth"
    return save_model_file(TransformerNet(channels=(4, 8, 8), num_residual=1), path)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("clip") / "clip.mp4")


def test_keeps_frames_rate_size_and_audio(tmp_path, tiny_model, clip, capsys):
    out = tmp_path / "out.mp4"
    argv = ["--model", tiny_model, "--input", clip, "--output", out, "--crf", "10"]
    proc = run_stylize(capsys, *argv, "--precision", "fp32", check_rc=0)
    assert f"[1/1] {clip} -> {out}  64x48  16 frames at 12 fps  " in proc.stdout
    assert "libx264, audio copied (aac)" in proc.stdout
    assert "clip.mp4: 100%" in proc.stderr and "16/16" in proc.stderr  # the progress bar
    got = probe(out)
    assert got["frames"] == 16 and got["fps"] == 12 and got["size"] == (64, 48)
    assert got["codec"] == "h264" and got["audio"] == ["aac"]
    # The frames are the model's output, in order (up to H.264 + yuv420p losses).
    frames, _ = read_frames(clip)
    expected = _stylizer(tiny_model).batch(frames)
    err = np.abs(got["pixels"].astype(float) - expected.permute(0, 2, 3, 1).numpy()).mean(
        axis=(1, 2, 3)
    )
    assert err.max() < 6, err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_resize_rounds_to_even_and_reencodes_audio_for_webm(tmp_path, tiny_model, clip, capsys):
    # --size 33 on 64x48 gives 33x25; yuv420p needs even sides -> 32x24. WebM takes
    # neither H.264 nor AAC: VP9 video, Opus audio.
    out = tmp_path / "out.webm"
    assert main("--model", tiny_model, "--input", clip, "--output", out, "--size", "33") == 0
    got = probe(out)
    assert got["size"] == (32, 24) and got["frames"] == 16 and got["fps"] == 12
    assert got["codec"] == "vp9" and got["audio"] == ["opus"]
    assert "re-encoded (aac -> opus)" in capsys.readouterr().out


def test_mkv_with_pcm_audio_and_no_audio(tmp_path, tiny_model):
    src = make_video(tmp_path / "in.mkv", audio="pcm_s16le", frames=6)
    report = stylize_video(src, tmp_path / "o.mov", _stylizer(tiny_model), batch_size=4)
    assert report.frames == 6 and report.audio == "copied (pcm_s16le)"
    assert probe(tmp_path / "o.mov")["audio"] == ["pcm_s16le"]
    silent = make_video(tmp_path / "silent.avi", vcodec="mpeg4", audio=None, frames=5)
    report = stylize_video(silent, tmp_path / "o.mp4", _stylizer(tiny_model), batch_size=2)
    got = probe(tmp_path / "o.mp4")
    assert report.audio == "none" and got["audio"] == [] and got["frames"] == 5


def _stylizer(model: Path) -> TorchStylizer:
    return TorchStylizer(model_path=model, device="cpu", precision="fp32")


def test_folder_mode_stylizes_videos_and_keeps_suffix(tmp_path, tiny_model, clip, capsys):
    src = tmp_path / "in"
    write_photo(src / "a.jpg", size=(40, 30))
    (src / "sub").mkdir()
    (src / "sub" / "clip.mkv").write_bytes(clip.read_bytes())  # MP4 data, .mkv name: still fine
    assert main("--model", tiny_model, "--input", src, "--output", tmp_path / "out") == 0
    assert "done 2, skipped 0, failed 0" in capsys.readouterr().err
    assert (tmp_path / "out" / "a.jpg").exists()
    assert probe(tmp_path / "out" / "sub" / "clip.mkv")["frames"] == 16


def test_corrupt_video_is_one_line_error_and_leaves_nothing(tmp_path, tiny_model, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(5000))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    argv = ["--model", tiny_model, "--input", bad, "--output", out_dir / "o.mp4"]
    proc = run_stylize(capsys, *argv, check_rc=1)
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == (
        f"error: {bad}: cannot read video (Invalid data found when processing input)"
    )
    assert list(out_dir.iterdir()) == []


def test_truncated_video_keeps_what_decodes_and_warns(tmp_path, tiny_model, capsys):
    src = make_video(tmp_path / "in.mkv", audio="pcm_s16le")
    half = tmp_path / "half.mkv"
    half.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    assert main("--model", tiny_model, "--input", half, "--output", tmp_path / "o.mp4") == 0
    frames = probe(tmp_path / "o.mp4")["frames"]
    assert 0 < frames < 16
    assert f"warning: {half}: {frames} of 16 frames decoded" in capsys.readouterr().err


def test_interrupted_run_leaves_no_output(tmp_path, tiny_model, clip):
    class Failing:  # stylize_video needs only a stylizer's batch()
        calls = 0

        def batch(self, frames):
            self.calls += 1
            if self.calls == 2:
                raise KeyboardInterrupt
            return frames

    with pytest.raises(KeyboardInterrupt):
        stylize_video(clip, tmp_path / "o.mp4", Failing(), batch_size=4)
    assert list(tmp_path.iterdir()) == []


def test_without_pyav_one_line_and_exit_2(tmp_path, tiny_model, clip, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    rc = main("--model", tiny_model, "--input", clip, "--output", tmp_path / "o.mp4")
    err = capsys.readouterr().err
    assert rc == 2
    assert err == f'error: {clip}: video needs PyAV: pip install "transformer-net[video]"\n'
    with pytest.raises(VideoError, match="video needs PyAV"):
        read_frames(clip)


def test_flicker_metric_values():
    frames_in = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 2, 2)  # changes by 1 per frame
    assert flicker(frames_in, 2 * frames_in) == pytest.approx(2.0)
    assert flicker(frames_in, torch.zeros(4, 3, 2, 2)) == 0.0
    assert np.isnan(flicker(torch.zeros(3, 3, 2, 2), frames_in[:3]))
    with pytest.raises(ValueError, match="differ"):
        flicker(frames_in, frames_in[:3])


def test_smoothing_reduces_flicker_without_ghosting():
    g = torch.Generator().manual_seed(0)
    t, h, w = 12, 16, 16
    frames_in = torch.full((t, 3, h, w), 100, dtype=torch.uint8)
    frames_in += torch.randint(0, 3, (t, 1, h, w), generator=g, dtype=torch.uint8)  # sensor noise
    for i in range(t):
        frames_in[i, :, 4:8, i : i + 4] = 250  # a white block moving right
    # "Stylization" that flickers: the input plus strong noise that differs every frame.
    noise = torch.randint(-30, 31, frames_in.shape, generator=g)
    stylized = (frames_in.int() + noise).clamp(0, 255).to(torch.uint8)
    smoother = TemporalSmoother(strength=0.8)
    smoothed = torch.cat([smoother(frames_in[i : i + 4], stylized[i : i + 4]) for i in (0, 4, 8)])
    before, after = flicker(frames_in, stylized), flicker(frames_in, smoothed)
    assert after < 0.6 * before, (before, after)
    # Where the block just arrived, the input changed by ~150 levels: no blend, no ghost.
    last = t - 1
    assert torch.equal(smoothed[last, :, 4:8, last + 3], stylized[last, :, 4:8, last + 3])
    assert torch.equal(TemporalSmoother(strength=0)(frames_in, stylized), stylized)
    with pytest.raises(ValueError):
        TemporalSmoother(strength=1.0)


def test_cli_smoothing_reduces_flicker_of_the_written_video(tmp_path, tiny_model, clip):
    plain, smooth = tmp_path / "plain.mp4", tmp_path / "smooth.mp4"
    common = [
        "--model",
        tiny_model,
        "--input",
        clip,
        "--crf",
        "0",
        "--quiet",
        "--precision",
        "fp32",
    ]
    assert main(*common, "--output", plain) == 0
    assert main(*common, "--output", smooth, "--temporal-smoothing", "0.8") == 0
    frames_in = torch.from_numpy(probe(clip)["pixels"])
    f_plain = flicker(frames_in, torch.from_numpy(probe(plain)["pixels"]))
    f_smooth = flicker(frames_in, torch.from_numpy(probe(smooth)["pixels"]))
    assert f_smooth < 0.9 * f_plain, (f_plain, f_smooth)


def test_bad_options_are_one_line_errors(tmp_path, tiny_model, clip, capsys):
    for opt, value, message in [
        ("--temporal-smoothing", "1.5", "must be in [0, 1), got 1.5"),
        ("--crf", "99", "must be in 0-51, got 99"),
        ("--batch-size", "0", "must be >= 1, got 0"),
        ("--batch-size", "two", "expected a whole number, got 'two'"),
    ]:
        argv = ["--model", tiny_model, "--input", clip, "--output", tmp_path / "o.mp4", opt, value]
        err = run_stylize(capsys, *argv, check_rc=2).stderr
        assert err == f"error: argument {opt}: {message} (see stylize.py --help)\n"
    with pytest.raises(ConfigError, match="batch size must be >= 1, got 0"):
        stylize_video(clip, tmp_path / "o.mp4", _stylizer(tiny_model), batch_size=0)
    with pytest.raises(ConfigError, match=r"temporal smoothing must be in \[0, 1\), got 1.0"):
        TemporalSmoother(strength=1.0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not (SHARED / "video" / "fox.mp4").exists(), reason="no ../shared/video")
def test_real_clip_first_frames(tmp_path):
    frames, rate = read_frames(SHARED / "video" / "fox.mp4", max_side=64, max_frames=5)
    assert frames.shape == (5, 3, 64, 64) and frames.dtype == torch.uint8
    assert rate == Fraction(2997, 100)


def test_flicker_script_prints_both_numbers(tiny_model, clip, capsys):
    video_flicker = load_script("video_flicker")
    args = ["--model", tiny_model, "--input", clip, "--frames", "8", "--size", "32"]
    assert video_flicker.main([str(a) for a in [*args, "--smoothing", "0.8"]]) == 0
    out = capsys.readouterr().out
    assert "8 frames 32x24 at 12 fps" in out
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| 0")]
    off, smooth = (float(row[2]) for row in rows)
    assert 0 < smooth < off


def test_mpeg4_fallback_without_libx264(tmp_path, tiny_model, clip, monkeypatch):
    monkeypatch.setattr(video_io, "VIDEO_ENCODERS", ("no-such-encoder", "mpeg4"))
    report = stylize_video(clip, tmp_path / "o.mp4", _stylizer(tiny_model), batch_size=8)
    got = probe(tmp_path / "o.mp4")
    assert report.codec == "mpeg4" and got["codec"] == "mpeg4" and got["frames"] == 16


def test_help_shows_the_video_example(capsys):
    assert main("--help") == 0
    out = capsys.readouterr().out
    assert "--input clip.mp4 --output out.mp4 --size 720 \\\n      --temporal-smoothing 0.7" in out
    assert "--crf CRF" in out and "--batch-size BATCH_SIZE" in out


def test_strength_and_preserve_color_apply_to_video_frames(tmp_path, tiny_model, clip):
    """--strength 0 gives the input frames back; --preserve-color keeps their chroma."""
    from transformer_net.color import postprocess

    frames, _ = read_frames(clip)  # (T, 3, H, W) uint8
    out = tmp_path / "s0.mp4"
    common = ["--model", tiny_model, "--input", clip, "--crf", "10", "--quiet"]
    assert main(*common, "--output", out, "--strength", "0") == 0
    got = probe(out)["pixels"].astype(float)  # (T, H, W, 3)
    assert np.abs(got - frames.permute(0, 2, 3, 1).numpy()).mean() < 4  # codec losses only

    out = tmp_path / "pc.mp4"
    argv = [*common, "--output", out, "--preserve-color", "--strength", "0.5"]
    assert main(*argv, "--precision", "fp32") == 0
    stylized = _stylizer(tiny_model).batch(frames)
    expected = torch.stack(
        [
            postprocess(a, b, strength=0.5, preserve_color=True)
            for a, b in zip(frames, stylized, strict=True)
        ]
    )
    got = probe(out)["pixels"].astype(float)
    assert np.abs(got - expected.permute(0, 2, 3, 1).numpy()).mean() < 4


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_exported_models_stylize_videos(tmp_path, kind):
    """.onnx and TorchScript files run on batches of frames like a .pth model."""
    from transformer_net.export import export_onnx, export_torchscript

    if kind == "onnx":
        pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = TransformerNet(channels=(4, 8, 8), num_residual=1).eval()
    model = (export_onnx if kind == "onnx" else export_torchscript)(net, tmp_path / f"m.{kind}")
    src = make_video(tmp_path / "in.mp4", frames=5, size=(32, 24), audio=None)
    out = tmp_path / "out.mp4"
    argv = ["--model", model, "--input", src, "--output", out, "--crf", "10", "--batch-size", "2"]
    if kind == "torchscript":
        argv.append("--trust-torchscript")  # it runs code when loaded: opted in
    assert main(*argv, "--quiet") == 0
    got = probe(out)
    assert got["frames"] == 5 and got["size"] == (32, 24)
    frames, _ = read_frames(src)
    with torch.no_grad():
        expected = net(frames.float()).clamp(0, 255).round()  # (T, 3, H, W)
    err = np.abs(got["pixels"].astype(float) - expected.permute(0, 2, 3, 1).numpy()).mean()
    assert err < 6, err  # H.264 + yuv420p losses only


def test_video_output_name_and_size_are_checked_before_the_model_loads(tmp_path, clip, capsys):
    never = tmp_path / "never.pth"  # not there: loading it would say "model file not found"
    assert main("--model", never, "--input", clip, "--output", tmp_path / "o.png") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --output {tmp_path / 'o.png'}: a video is written as a video")
    rc = main("--model", never, "--input", clip, "--output", tmp_path / "o.mp4", "--size", "99999")
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith(f"error: --size 99999: {clip}: resizing 64x48 to 99999x74999 (7500 MP)")
    assert list(tmp_path.iterdir()) == []
