"""ONNX and TorchScript export: dynamic sizes match PyTorch, stylize.py runs the files."""

import re
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import script_main, write_photo
from tests.test_stylize import run_stylize
from transformer_net import stylize_cli
from transformer_net.checkpoint import save_model_file
from transformer_net.errors import ModelFileError
from transformer_net.export import export_onnx, export_torchscript
from transformer_net.model import TransformerNet, _pad_to_multiple, _pad_to_multiple_traced
from transformer_net.runners import OnnxStylizer, TorchScriptStylizer, is_torchscript_file

SIZES = [(37, 53), (64, 48), (5, 9), (1, 1)]  # (H, W): odd, even, smallest reflectable, 1x1


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return TransformerNet(channels=(8, 16, 32), num_residual=1).eval()


@pytest.fixture(scope="module")
def onnx_file(net, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    return export_onnx(net, tmp_path_factory.mktemp("onnx") / "tiny.onnx", meta={"style": "t"})


@pytest.fixture(scope="module")
def ts_file(net, tmp_path_factory):
    return export_torchscript(net, tmp_path_factory.mktemp("ts") / "tiny.pt")


def reference(net, h, w, seed=0):
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 255
    with torch.no_grad():
        return x, net(x)


def test_traced_padding_equals_eager_padding():
    for h in range(1, 14):
        for w in range(1, 14):
            x = torch.randn(1, 3, h, w)
            assert torch.equal(_pad_to_multiple_traced(x), _pad_to_multiple(x)), (h, w)


def test_onnx_matches_pytorch_at_any_size(net, onnx_file):
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    for h, w in SIZES:
        x, expected = reference(net, h, w)
        got = session.run(None, {"image": x.numpy()})[0]
        assert got.shape == (1, 3, h, w)
        assert np.abs(got - expected.numpy()).max() < 1e-3, (h, w)
    x = torch.rand(2, 3, 20, 12) * 255  # batch is dynamic too
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"image": x.numpy()})[0], net(x), atol=1e-3)


def test_onnx_metadata(onnx_file):
    onnx = pytest.importorskip("onnx")
    props = {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
    assert props["format"] == "transformer-net" and '"num_residual": 1' in props["model_args"]
    assert '"style": "t"' in props["meta"]


def test_torchscript_matches_pytorch_at_any_size(net, ts_file):
    assert is_torchscript_file(ts_file)
    model = TorchScriptStylizer(model_path=ts_file, device="cpu", trust=True).model
    for h, w in SIZES:
        x, expected = reference(net, h, w)
        with torch.no_grad():
            got = model(x)
        assert got.shape == (1, 3, h, w)
        assert (got - expected).abs().max() < 1e-3, (h, w)


def test_torch_save_files_are_not_torchscript(net, tmp_path):
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert not is_torchscript_file(tmp_path / "sd.pt")
    assert not is_torchscript_file(tmp_path / "junk.pt")


def test_stylizers_agree_with_pytorch(net, onnx_file, ts_file):
    image = torch.randint(0, 256, (3, 37, 53), dtype=torch.uint8)
    with torch.no_grad():
        expected = net(image[None].float()).clamp(0, 255).round()[0]
    for stylizer in (
        OnnxStylizer(model_path=onnx_file, device="cpu"),
        TorchScriptStylizer(model_path=ts_file, device="cpu", trust=True),
    ):
        out, seconds = stylizer.timed(image)
        assert stylizer.device.type == "cpu" and stylizer.dtype == torch.float32
        assert out.dtype == torch.uint8 and out.shape == (3, 37, 53) and seconds > 0
        assert (out.float() - expected).abs().max() <= 1  # rounding at .5 may differ


def test_stylize_runs_onnx_model(onnx_file, tmp_path, capsys):
    src = write_photo(tmp_path / "in.jpg", size=(37, 23))
    argv = ["--model", onnx_file, "--input", src, "--output", tmp_path / "o.png"]
    proc = run_stylize(capsys, *argv, check_rc=0)
    assert f"model {onnx_file} (onnxruntime) on cpu (float32); 1 image(s)" in proc.stderr
    assert Image.open(tmp_path / "o.png").size == (37, 23)


def test_stylize_runs_torchscript_with_strength(net, ts_file, tmp_path):
    src = write_photo(tmp_path / "in.png", size=(19, 11))
    argv = ["--model", str(ts_file), "--input", str(src), "--quiet", "--strength", "0"]
    argv.append("--trust-torchscript")  # TorchScript runs code when loaded: opted in
    assert stylize_cli.main([*argv, "--output", str(tmp_path / "o.png")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), np.asarray(Image.open(src)))


def test_corrupt_onnx_is_one_line_error(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage, not a protobuf model")
    src = write_photo(tmp_path / "in.png", size=(8, 8))
    out = str(tmp_path / "o.png")
    rc = stylize_cli.main(["--model", str(bad), "--input", str(src), "--output", out])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: {bad}: corrupt or not an ONNX model")


def test_onnx_rejects_bf16_and_compile(onnx_file, tmp_path, capsys):
    src = write_photo(tmp_path / "in.png", size=(8, 8))
    argv = ["--model", str(onnx_file), "--input", str(src), "--output", str(tmp_path / "o.png")]
    assert stylize_cli.main([*argv, "--precision", "bf16"]) == 2
    assert "run in fp32" in capsys.readouterr().err


def test_missing_onnxruntime_says_how_to_install(onnx_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(ModelFileError, match=r'pip install "transformer-net\[onnx\]"') as e:
        OnnxStylizer(model_path=onnx_file)
    assert str(e.value).startswith(f"{onnx_file}: running .onnx models needs onnxruntime")


def test_missing_torchscript_file(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        TorchScriptStylizer(model_path=tmp_path / "nope.pt")


@pytest.fixture
def export_script():
    return script_main("export_model")


def test_export_script_formats_from_suffix(net, tmp_path, export_script, capsys):
    pytest.importorskip("onnxruntime")
    src = save_model_file(net, tmp_path / "m.pth", meta={"style": "t"})
    assert export_script([str(src), str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "(onnx," in out and "verified with onnxruntime" in out and "max abs difference" in out
    assert (tmp_path / "m.onnx").stat().st_size > 0
    argv = [str(src), str(tmp_path / "m.ts"), "--benchmark", "16", "--runs", "1"]
    assert export_script(argv) == 0
    assert is_torchscript_file(tmp_path / "m.ts")
    out = capsys.readouterr().out
    assert "verified with torch.jit.load" in out and "16x16, median of 1 runs, " in out
    assert re.search(r"PyTorch fp32 eager +\d+ ms", out) and "torch.jit.load " in out
    assert export_script([str(src), str(tmp_path / "m.bin"), "--format", "onnx"]) == 0
    assert export_script([str(src), str(tmp_path / "m.bin2")]) == 2
    assert "unknown suffix" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated
def test_exported_files_run_without_this_package(onnx_file, ts_file, monkeypatch):
    # With every module of this package hidden, `import transformer_net...` fails: the
    # files must load and run from what they hold (graph and weights) alone.
    import onnxruntime as ort

    for name in [m for m in sys.modules if m.split(".")[0] == "transformer_net"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError):
        import transformer_net.model  # noqa: F401
    x = torch.rand(1, 3, 37, 53) * 255
    assert torch.jit.load(str(ts_file))(x).shape == (1, 3, 37, 53)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert session.run(None, {"image": x.numpy()})[0].shape == (1, 3, 37, 53)


def test_fixed_size_onnx(net, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path = export_onnx(net, tmp_path / "fixed.onnx", dynamic=False, size=(16, 20))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 16, 20]
    x, expected = reference(net, 16, 20)
    assert np.abs(session.run(None, {"image": x.numpy()})[0] - expected.numpy()).max() < 1e-3


def test_runners_take_batches_of_frames(net, onnx_file, ts_file, tmp_path):
    frames = torch.randint(0, 256, (3, 3, 20, 12), dtype=torch.uint8)
    fixed = export_onnx(net, tmp_path / "fixed.onnx", dynamic=False, size=(20, 12))
    for stylizer in (
        OnnxStylizer(model_path=onnx_file, device="cpu"),
        OnnxStylizer(model_path=fixed, device="cpu"),  # batch 1 only: run frame by frame
        TorchScriptStylizer(model_path=ts_file, device="cpu", trust=True),
    ):
        out = stylizer.batch(frames)
        assert out.dtype == torch.uint8 and out.shape == frames.shape
        assert torch.equal(out, torch.stack([stylizer(f) for f in frames]))


def test_exported_weights_with_nan_are_refused(tmp_path, capsys):
    torch.manual_seed(0)
    bad = TransformerNet(channels=(4, 8, 8), num_residual=1).eval()
    with torch.no_grad():
        bad.in2.bias[3] = float("nan")  # what a diverged training run leaves behind
    ts = export_torchscript(bad, tmp_path / "bad.pt")
    with pytest.raises(ModelFileError) as e:
        TorchScriptStylizer(model_path=ts, device="cpu", trust=True)
    assert str(e.value) == (
        f"{ts}: weights hold NaN/inf (1 of 8 values of 'in2.bias'): "
        "the model would give black images (training diverged?)"
    )
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = export_onnx(bad, tmp_path / "bad.onnx")
    src = write_photo(tmp_path / "in.png", size=(8, 8))
    argv = ["--model", path, "--input", src, "--output", tmp_path / "o.png"]
    err = run_stylize(capsys, *argv, check_rc=2).stderr
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: weights hold NaN/inf (")
    assert not (tmp_path / "o.png").exists()
