"""Gatys-style optimization of the image itself, with the training loss."""

import json

import pytest
import torch
from PIL import Image

from tests.conftest import CAFFE_VGG, SHARED, load_script, require, write_photo
from tests.test_stylize import run_stylize
from transformer_net.errors import ConfigError
from transformer_net.loss import PerceptualLoss
from transformer_net.optimize import GatysStylizer, optimize_image


@pytest.fixture(scope="module")
def small_loss():
    torch.manual_seed(0)
    # Random VGG features are tiny: scale the style term so the loss is O(1).
    return PerceptualLoss(
        style_image=torch.rand(3, 32, 32) * 255, vgg_weights="random", style_weight=1e9
    )


@pytest.mark.parametrize("optimizer,init", [("lbfgs", "content"), ("adam", "noise")])
def test_loss_falls_and_output_is_an_image(small_loss, optimizer, init):
    torch.manual_seed(1)
    content = (torch.rand(3, 24, 28) * 255).to(torch.uint8)
    seen = []
    out = optimize_image(
        content=content,
        loss=small_loss,
        iterations=20,
        optimizer=optimizer,
        init=init,
        progress=lambda i, losses: seen.append(losses["total"]),
        report_every=5,
    )
    assert out.shape == content.shape and out.dtype == torch.uint8
    assert len(seen) >= 3 and seen[-1] < seen[0]


def test_bad_arguments(small_loss, style_file):
    content = torch.zeros(3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ConfigError, match="optimizer"):
        optimize_image(content=content, loss=small_loss, optimizer="sgd")
    with pytest.raises(ConfigError, match="init"):
        optimize_image(content=content, loss=small_loss, init="zeros")
    with pytest.raises(ConfigError, match="iterations must be >= 1, got 0"):
        optimize_image(content=content, loss=small_loss, iterations=0)
    # The stylizer checks them before it reads the style or the VGG weights.
    with pytest.raises(ConfigError, match="optimizer"):
        GatysStylizer(style_file, vgg_weights="/nonexistent/vgg.pth", optimizer="sgd")


def test_gatys_stylizer_reports_progress_and_refuses_video(style_file):
    seen = []
    stylizer = GatysStylizer(
        style_file,
        device="cpu",
        vgg_weights="random",
        style_weight=1e9,
        iterations=4,
        optimizer="adam",
        progress=lambda i, losses: seen.append((i, sorted(losses))),
    )
    assert not stylizer.supports_video and stylizer.dtype == torch.float32
    frames = torch.randint(0, 256, (2, 3, 12, 16), dtype=torch.uint8)
    out, seconds = stylizer.timed(frames[0])
    assert out.shape == (3, 12, 16) and out.dtype == torch.uint8 and seconds > 0
    assert seen == [(4, ["content", "style", "total", "tv"])]  # every 25 and the last
    assert stylizer.batch(frames).shape == frames.shape


def test_cli_optimize_with_the_real_caffe_vgg(tmp_path, capsys):
    vgg = require(CAFFE_VGG)
    style = require(SHARED / "images" / "styles" / "starry_night.jpg")
    src = write_photo(tmp_path / "photo.png", size=(40, 32))
    argv = [
        "--method",
        "optimize",
        "--style",
        style,
        "--style-size",
        64,
        "--vgg-weights",
        vgg,
        "--preprocessing",
        "caffe",
        "--iterations",
        10,
    ]
    proc = run_stylize(capsys, *argv, "--input", src, "--output", tmp_path / "out.png", check_rc=0)
    assert "  iteration 10/10: total " in proc.stderr and "optimization on " in proc.stderr
    assert Image.open(tmp_path / "out.png").size == (40, 32)


def test_cli_optimize_needs_a_style(tmp_path, capsys):
    src = write_photo(tmp_path / "photo.png")
    io = ["--input", src, "--output", tmp_path / "o.png"]
    proc = run_stylize(capsys, "--method", "optimize", *io, check_rc=2)
    assert proc.stderr == "error: --method optimize needs --style painting.jpg\n"
    proc = run_stylize(capsys, *io, check_rc=2)
    assert proc.stderr == "error: --model is required (or --method optimize with --style)\n"
    proc = run_stylize(capsys, "--method", "optimize", "--style", src, *io, "--iterations", 0)
    assert proc.returncode == 2 and "argument --iterations: must be >= 1, got 0" in proc.stderr


def _tiny_model_file(tmp_path, style_file):
    """A small untrained model file with its painting (as training writes one: the
    thumbnail evaluate.py uses) and a random-VGG loss in its metadata."""
    from transformer_net.checkpoint import save_model_file
    from transformer_net.image import load_image, style_thumbnail
    from transformer_net.model import TransformerNet

    meta = {
        "style_image": str(style_file),
        "style_thumbnails": [style_thumbnail(load_image(style_file))],
        "loss": {"vgg_weights": "random", "style_weight": 1e9},
    }
    return save_model_file(
        TransformerNet(channels=(4, 8, 8), num_residual=1), tmp_path / "m.pth", meta=meta
    )


def _evaluate_argv(model, tmp_path, iterations: str) -> list[str]:
    """evaluate.py on the photos in tmp_path/photos at 32 px into tmp_path/eval."""
    argv = [
        "--model",
        model,
        "--images",
        tmp_path / "photos",
        "--size",
        32,
        "--iterations",
        iterations,
        "--out",
        tmp_path / "eval",
    ]
    return [str(a) for a in argv]


@pytest.fixture(scope="module")
def evaluate():
    """scripts/evaluate.py's main(argv), imported (no new interpreter per run)."""
    return load_script("evaluate").main


def test_evaluate_script_writes_report_and_contact_sheets(tmp_path, style_file, evaluate, capsys):
    model = _tiny_model_file(tmp_path, style_file)
    for i in range(2):
        write_photo(tmp_path / "photos" / f"p{i}.png", size=(36, 28), seed=i)
    argv = _evaluate_argv(model, tmp_path, "3,6") + ["--tensorboard", str(tmp_path / "tb")]
    assert evaluate(argv) == 0, capsys.readouterr().err[-2000:]
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    methods = [s["method"] for s in report["summary"]]
    assert methods == ["feed-forward", "gatys-3", "gatys-6"] and len(report["rows"]) == 6
    assert all(s["images"] == 2 and s["total"] > 0 for s in report["summary"])
    assert "| feed-forward |" in (tmp_path / "eval" / "evaluation.md").read_text()
    assert "p1.png: feed-forward " in capsys.readouterr().err  # one line per photo
    sheet = Image.open(tmp_path / "eval" / "p0_sheet.jpg")
    assert sheet.width > 4 * 32  # content | style | feed-forward | two Gatys panels
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    assert {"eval/p0", "eval/p1"} <= set(ea.Tags()["images"])
    total = ea.Scalars("eval/feed-forward/total")[0].value
    assert total == pytest.approx(report["summary"][0]["total"], rel=1e-5)
    assert evaluate([str(a) for a in [*argv[:2], "--images", tmp_path / "nope"]]) == 2
    assert "error:" in capsys.readouterr().err

    # --iterations 0: the network only (checkpoints of one run share the Gatys levels).
    only = [*argv[:6], "--iterations", "0", "--out", tmp_path / "ff"]
    assert evaluate([str(a) for a in only]) == 0, capsys.readouterr().err[-2000:]
    ff_only = json.loads((tmp_path / "ff" / "evaluation.json").read_text())
    assert [s["method"] for s in ff_only["summary"]] == ["feed-forward"]
    assert ff_only["summary"][0]["images"] == 2 and ff_only["summary"][0]["total"] > 0
    assert Image.open(tmp_path / "ff" / "p0_sheet.jpg").width < sheet.width  # 3 panels
    for text in ("50,x", "-5", "10,0"):
        capsys.readouterr()
        assert evaluate([str(a) for a in [*argv[:6], "--iterations", text]]) == 2
        err = capsys.readouterr().err
        assert "error: --iterations: expected positive counts" in err
        assert f"(or 0), got '{text}'" in err


def test_evaluate_script_reports_both_gatys_starts(tmp_path, style_file, evaluate, capsys):
    """--init content,noise: the photo-started yardstick and Johnson et al.'s noise-started one."""
    model = _tiny_model_file(tmp_path, style_file)
    write_photo(tmp_path / "photos" / "p0.png", size=(36, 28), seed=0)
    argv = _evaluate_argv(model, tmp_path, "2,4")
    assert evaluate([*argv, "--init", "content,noise"]) == 0, capsys.readouterr().err[-2000:]
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert report["init"] == ["content", "noise"]
    totals = {s["method"]: s["total"] for s in report["summary"]}
    assert list(totals) == ["feed-forward", "gatys-2", "gatys-4", "gatys-noise-2", "gatys-noise-4"]
    # The photo is a far better start than noise for the content term: after two
    # evaluations the noise-started image is still much farther from the photo.
    content = {s["method"]: s["content"] for s in report["summary"]}
    assert content["gatys-noise-2"] > 10 * content["gatys-2"]
    assert "| gatys-noise-4 |" in (tmp_path / "eval" / "evaluation.md").read_text()
    sheet = Image.open(tmp_path / "eval" / "p0_sheet.jpg")
    assert sheet.width > 6 * 32  # content | style | feed-forward | 2 + 2 Gatys panels

    capsys.readouterr()
    assert evaluate([*argv, "--init", "zeros"]) == 2
    err = capsys.readouterr().err
    assert "error: --init: expected content or noise" in err and "'zeros'" in err


def test_grid_peak_finds_a_4px_texture():
    """evaluate.py's grid peak: ~1 for a smooth image, large with a 4-px repeating texture."""
    grid_peak = load_script("evaluate").grid_peak
    torch.manual_seed(0)
    smooth = torch.nn.functional.interpolate(
        torch.rand(1, 3, 12, 12) * 255, size=(128, 160), mode="bicubic"
    )[0]
    noise = torch.randn(3, 128, 160) * 8  # a flat spectrum around the peaks
    tile = torch.randn(1, 4, 4).repeat(1, 32, 40) * 6  # the same in every channel
    assert grid_peak(smooth + noise) < 2
    assert grid_peak(smooth + noise + tile) > 5
    assert grid_peak(smooth[:, :31, :]) is None  # too small to tell
