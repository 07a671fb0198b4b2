"""scripts/benchmark.py and scripts/kernel_profile.py on the CPU, tiny sizes."""

import json
import math

import pytest
import torch

from tests.conftest import load_script


@pytest.fixture(scope="module")
def benchmark():
    return load_script("benchmark")


def test_benchmark_reports_every_configuration_against_the_baseline(benchmark, tmp_path, capsys):
    out = tmp_path / "b.json"
    rc = benchmark.main(
        [
            "--device",
            "cpu",
            "--baseline",
            "--train-configs",
            "fp32-cl",
            "--infer-configs",
            "fp32-cl",
            "--image-size",
            "32",
            "--batch-size",
            "1",
            "--sizes",
            "32,48x32",
            "--steps",
            "1",
            "--rounds",
            "2",
            "--warmup",
            "1",
            "--quality-steps",
            "2",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    payload = json.loads(out.read_text())
    rows = [(r["kind"], r["config"], r["shape"]) for r in payload["results"]]
    assert rows == [
        ("train", "baseline", "1x32x32"),
        ("train", "fp32-cl", "1x32x32"),
        ("stylize", "baseline", "32x32"),
        ("stylize", "fp32-cl", "32x32"),
        ("stylize", "baseline", "48x32"),
        ("stylize", "fp32-cl", "48x32"),
    ]
    for r in payload["results"]:
        assert r["images_per_s"] > 0 and len(r["samples_ms"]) == 2  # one per round
        assert r["ms_min"] == pytest.approx(min(r["samples_ms"]), abs=1e-3)  # rounded samples
        assert r["ms_min"] <= r["ms_median"] <= max(r["samples_ms"]) + 1e-3
        assert r["images_per_s"] == pytest.approx(1000 / r["ms_median"])  # batch 1
        assert math.isfinite(r["ratio"]) and r["ratio"] > 0
    for first, other in [(0, 1), (2, 3), (4, 5)]:  # each against the baseline of its shape
        a, b = payload["results"][first], payload["results"][other]
        assert a["ratio"] == 1.0 and b["ratio"] == pytest.approx(a["ms_median"] / b["ms_median"])
    quality = payload["quality"]
    assert quality["baseline"]["loss_ratio_vs_baseline"] == 1.0
    assert quality["fp32-cl"]["psnr_vs_baseline"] > 30  # same math, other memory layout
    assert "fp32-cl" in capsys.readouterr().out  # the table


def test_presets_and_onnx_runtimes_are_configurations(benchmark, tmp_path, capsys):
    """--presets runs each configuration per model preset; -onnx times the ONNX export."""
    pytest.importorskip("onnxruntime")
    out = tmp_path / "b.json"
    argv = [
        "--device",
        "cpu",
        "--skip-training",
        "--presets",
        "tiny,slim",
        "--infer-configs",
        "fp32,fp32-onnx",
        "--sizes",
        "32",
        "--steps",
        "1",
        "--rounds",
        "1",
        "--warmup",
        "1",
        "--json",
        str(out),
    ]
    assert benchmark.main(argv) == 0
    payload = json.loads(out.read_text())
    configs = [r["config"] for r in payload["results"]]
    assert configs == ["tiny:fp32", "slim:fp32", "tiny:fp32-onnx", "slim:fp32-onnx"]
    presets = {row["preset"]: row for row in payload["presets"]}
    # slim (16/32/64, 3 blocks) has more parameters and arithmetic than tiny (8/16/32)
    assert presets["slim"]["params"] > presets["tiny"]["params"] > 0
    assert presets["slim"]["gflop_512"] > presets["tiny"]["gflop_512"] > 0
    assert presets["tiny"]["gflop_1080p"] > presets["tiny"]["gflop_512"]
    assert "GFLOP 512" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--train-configs", "fp32-turbo"], "unknown configuration 'fp32-turbo'"),
        (["--train-configs", "fp32-graph"], "-graph, -onnx, -int8 and peer are inference"),
        (["--train-configs", "fp32-onnx"], "-graph, -onnx, -int8 and peer are inference"),
        (["--infer-configs", "fp32-int8"], "-int8 is an ONNX runtime: add -onnx"),
        (["--infer-configs", "bf16-onnx"], "-onnx runs the fp32 export"),
        (["--infer-configs", "huge:fp32"], "unknown model preset 'huge'; known: half, johnson"),
        (["--infer-configs", "bf16-graph"], "-graph needs --device cuda"),
    ],
)
def test_benchmark_rejects_bad_configurations(benchmark, capsys, argv, message):
    assert benchmark.main(["--device", "cpu", *argv]) == 2
    assert message in capsys.readouterr().err


def test_kernel_profile_prints_timing_and_the_top_operators(capsys):
    profile = load_script("kernel_profile")
    assert (
        profile.main(
            [
                "stylize",
                "--config",
                "fp32",
                "--device",
                "cpu",
                "--size",
                "32",
                "--calls",
                "1",
                "--rows",
                "3",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "stylize fp32 32x32 on cpu:" in out and "aten::" in out
    assert profile.main(["train", "--config", "fp32-graph", "--device", "cpu"]) == 2
    assert "-graph is for stylize on CUDA" in capsys.readouterr().err


def test_loader_only_times_the_data_loader(benchmark, photo_dir, tmp_path, capsys):
    out = tmp_path / "d.json"
    argv = [
        "--loader-only",
        "--data",
        str(photo_dir),
        "--image-size",
        "16",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--steps",
        "2",
        "--rounds",
        "2",
        "--warmup",
        "1",
        "--json",
        str(out),
    ]
    assert benchmark.main(argv) == 0
    (result,) = json.loads(out.read_text())["results"]
    assert (result["kind"], result["config"], result["shape"]) == ("data", "loader-0w", "2x16²")
    assert result["images_per_s"] > 0 and len(result["samples_ms"]) == 2


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--loader-only"], "--loader-only needs --data"),
        (["--loader-only", "--data", "/nonexistent/photos"], "/nonexistent/photos"),
        (["--skip-inference", "--vgg-weights", "/nonexistent/vgg.pth"], "/nonexistent/vgg.pth"),
    ],
)
def test_bad_data_or_weights_are_one_line_errors(benchmark, capsys, argv, message):
    assert benchmark.main(["--device", "cpu", "--train-configs", "fp32", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and message in err


def test_configuration_names_parse_into_switches(benchmark):
    cfg = benchmark.Config.parse("bf16-cl-compile-pad8-slicepad")
    assert (cfg.dtype, cfg.channels_last, cfg.compile, cfg.graph, cfg.pad8, cfg.slicepad) == (
        torch.bfloat16,
        True,
        True,
        False,
        True,
        True,
    )
    base = benchmark.Config.parse("baseline")
    assert (base.dtype, base.channels_last, base.compile, base.pad8) == (
        torch.float32,
        False,
        False,
        False,
    )
