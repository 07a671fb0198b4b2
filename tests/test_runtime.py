"""CPU runtimes: int8 ONNX files, stylize.py's --runtime choice, the ONNX cache, --threads."""

import os
import re
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import script_main, write_photo
from tests.test_stylize import run_stylize
from transformer_net import inference, runners
from transformer_net.checkpoint import save_model_file
from transformer_net.errors import ConfigError, ImageError
from transformer_net.export import export_onnx, export_torchscript
from transformer_net.loss import PerceptualLoss
from transformer_net.model import TransformerNet
from transformer_net.quantize import output_psnr, quantize_onnx
from transformer_net.runners import OnnxStylizer, TorchStylizer, open_stylizer, pick_runtime

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

CHANNELS = dict(channels=(4, 8, 8), num_residual=1)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Each test its own cache folder: the user's stays untouched.

    And a CPU without native bf16, whatever this one has: there ``--runtime auto``
    runs a model file through its cached ONNX export, which these tests are about
    (on a CPU with native bf16, e.g. AVX512-BF16, it picks PyTorch in bf16; tested
    on its own below).
    """
    monkeypatch.setenv("TRANSFORMER_NET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(inference, "native_bf16", lambda device: False)
    return tmp_path / "cache" / "onnx"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """12 photos: the first 8 calibrate, the other 4 are held out by export_model.py."""
    folder = tmp_path_factory.mktemp("photos")
    for i in range(12):
        write_photo(folder / f"p{i:02d}.jpg", size=(48 + 2 * i, 40), seed=i)
    return folder


def train_tiny(photo_folder, steps: int = 40, seed: int = 0) -> TransformerNet:
    """A few dozen Adam steps of the perceptual loss (random VGG): trained weights have the
    spread activations that quantization must handle, unlike a fresh network's."""
    torch.manual_seed(seed)
    net = TransformerNet(**CHANNELS)
    images = [
        torch.from_numpy(np.asarray(Image.open(p).convert("RGB").resize((32, 32))).copy())
        for p in sorted(photo_folder.glob("*.jpg"))
    ]
    batch = torch.stack(images).permute(0, 3, 1, 2).float()  # (N, 3, 32, 32) 0-255
    loss = PerceptualLoss(
        style_image=batch[-1],
        vgg_weights="random",
        style_layers={"relu1_2": 1.0},
        content_layers={"relu1_2": 1.0},
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors this small: threads only add waiting (4x on 2 busy cores)
    try:
        for step in range(steps):
            x = batch[step % 4 * 2 : step % 4 * 2 + 2]
            optimizer.zero_grad()
            loss(net(x), x)["total"].backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


@pytest.fixture(scope="module")
def trained(photos, tmp_path_factory):
    return save_model_file(train_tiny(photos), tmp_path_factory.mktemp("model") / "tiny.pth")


@pytest.fixture(scope="module")
def int8_file(trained, photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "tiny_int8.onnx"
    argv = [trained, out, "--quantize", "int8", "--calibration", photos]
    argv += ["--calibration-count", "8", "--calibration-size", "32"]
    assert script_main("export_model")([str(a) for a in argv]) == 0
    return out


# --- int8 -----------------------------------------------------------------------


def test_int8_export_is_close_to_fp32(trained, photos, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    argv = [trained, out, "--quantize", "int8", "--calibration", photos]
    argv += ["--calibration-count", "8", "--calibration-size", "32"]
    assert script_main("export_model")([str(a) for a in argv]) == 0
    stdout, stderr = capsys.readouterr()
    assert "verified with onnxruntime" in stdout and "(onnx int8, calibrated on 8 photos" in stdout
    found = re.search(r"on 4 photos not used for calibration, 32x32: mean PSNR ([\d.]+) dB", stdout)
    assert found, stdout
    # 30 dB is where differences start to show (the script warns below it; the bf16
    # test of test_stylize.py uses it too). 8-bit steps over each tensor's range add
    # noise far below it when the ranges are calibrated; a wrong zero point, scale
    # or layout gives garbage, far below it.
    assert float(found.group(1)) > 30 and "warning" not in stderr
    model = onnx.load(str(out))
    props = {p.key: p.value for p in model.metadata_props}
    assert props["quantized"] == "int8" and props["format"] == "transformer-net"
    assert '"num_residual": 1' in props["model_args"] and "exported_from" in props["meta"]
    ops = [node.op_type for node in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    # the first and the last convolution (3 channels, next to the image) stay fp32
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    quantized_inputs = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    assert [c.input[1] in quantized_inputs for c in (convs[0], convs[-1])] == [False, False]
    assert all(c.input[1] in quantized_inputs for c in convs[1:-1])


def test_int8_file_runs_every_quantized_convolution_in_int8(int8_file, tmp_path):
    """What onnxruntime makes of the file when it loads it: each quantized convolution
    fused into one QLinearConv (not dequantized to an fp32 Conv, which is slower than
    no quantization), and the reflection pads in front of them copying uint8 values."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "loaded.onnx")
    options.log_severity_level = 3  # not its warning that the saved graph is CPU-specific
    ort.InferenceSession(str(int8_file), options, providers=["CPUExecutionProvider"])
    loaded = onnx.load(str(tmp_path / "loaded.onnx")).graph
    ops = [n.op_type for n in loaded.node]
    convs = [n for n in onnx.load(str(int8_file)).graph.node if n.op_type == "Conv"]
    assert ops.count("QLinearConv") == len(convs) - 2  # all but the two 9x9 layers
    made_by = {out: n for n in loaded.node for out in n.output}
    conv_inputs = [i for c in loaded.node if c.op_type == "Conv" for i in c.input if i in made_by]
    assert "DequantizeLinear" not in {made_by[i].op_type for i in conv_inputs}

    def source(name: str) -> str:  # what a Pad's values come from, through upsamplings
        node = made_by[name]
        return source(node.input[0]) if node.op_type == "Resize" else node.op_type

    sources = sorted(source(n.input[0]) for n in loaded.node if n.op_type == "Pad")
    # the first and last convolutions' pads read float32: the image, the fp32 output
    # layer's input; every other pad copies the quantized values of its convolution
    assert sources == sorted(["Gather", "Relu"] + ["QuantizeLinear"] * (len(convs) - 2))


def _copying_graph(pad_mode: str):
    """x -> Resize(nearest, 2x) -> Pad(pad_mode) -> QuantizeLinear -> DequantizeLinear."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(np.array([], np.float32), "roi"),
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
        numpy_helper.from_array(np.array([0, 0, 2, 1, 0, 0, 1, 2], np.int64), "pads"),
        numpy_helper.from_array(np.array(0.05, np.float32), "scale"),
        numpy_helper.from_array(np.array(100, np.uint8), "zero"),
    ]
    nodes = [
        helper.make_node("Resize", ["x", "roi", "scales"], ["up"], name="up", mode="nearest"),
        helper.make_node("Pad", ["up", "pads"], ["padded"], name="pad", mode=pad_mode),
        helper.make_node("QuantizeLinear", ["padded", "scale", "zero"], ["q"], name="q"),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y"], name="dq"),
    ]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2, None, None]) for n in "xy"]
    graph = helper.make_graph(nodes, "copies", io[:1], io[1:], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("pad_mode,moved", [("reflect", 2), ("edge", 2), ("constant", 0)])
def test_quantize_before_copies_keeps_every_value(pad_mode, moved):
    from transformer_net.quantize import quantize_before_copies

    model = _copying_graph(pad_mode)
    x = np.random.default_rng(0).normal(0, 4, (1, 2, 5, 7)).astype(np.float32)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert quantize_before_copies(model.graph) == moved
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    # a constant pad writes 0.0, which is not the quantized zero (100): it must stay
    expected = ["QuantizeLinear", "Resize", "Pad"] if moved else ["Resize", "Pad", "QuantizeLinear"]
    assert ops == [*expected, "DequantizeLinear"]
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert after.shape == (1, 2, 13, 17) and np.array_equal(before, after)


def test_int8_psnr_warning_and_calibration_photos_reused(trained, photos, tmp_path, capsys):
    export_model = sys.modules[script_main("export_model").__module__]
    argv = [trained, tmp_path / "q.onnx", "--quantize", "int8", "--calibration", photos]
    argv += ["--calibration-count", "20", "--calibration-size", "16"]  # all 12 calibrate
    with pytest.MonkeyPatch.context() as m:
        m.setattr(export_model, "PSNR_WARNING_DB", 1000.0)  # any real PSNR is below it
        assert export_model.main([str(a) for a in argv]) == 0  # a warning, not an error
    stdout, stderr = capsys.readouterr()
    assert "on 4 of the calibration photos (the folder has no others), 16x16" in stdout
    assert re.fullmatch(r"warning: \S+q\.onnx: mean PSNR [\d.]+ dB is below 1000 dB: .*\n", stderr)


@pytest.mark.parametrize(
    "extra,message",
    [
        ([], "--quantize int8 needs --calibration PHOTO_FOLDER"),
        (["--calibration", "nowhere"], "nowhere: calibration photos: not a folder"),
        (["--calibration-count", "0", "--calibration", "."], "must be >= 1"),
    ],
)
def test_int8_export_usage_errors(trained, tmp_path, capsys, extra, message):
    argv = [str(trained), str(tmp_path / "q.onnx"), "--quantize", "int8", *extra]
    assert script_main("export_model")(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    argv = [str(trained), str(tmp_path / "q.pt"), "--quantize", "int8", "--calibration", "."]
    assert script_main("export_model")(argv) == 2
    assert "--quantize int8 writes ONNX files" in capsys.readouterr().err


def test_quantize_onnx_errors_name_the_file(trained, tmp_path):
    fp32 = export_onnx(TransformerNet(**CHANNELS), tmp_path / "m.onnx")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="empty: calibration photos: no image files"):
        quantize_onnx(fp32, tmp_path / "q.onnx", photos=tmp_path / "empty")
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ImageError, match="bad.jpg: cannot read the photo"):
        quantize_onnx(fp32, tmp_path / "q.onnx", photos=[tmp_path / "bad.jpg"])
    assert not (tmp_path / "q.onnx").exists()


def test_stylize_runs_the_int8_file(int8_file, trained, tmp_path, capsys):
    src = write_photo(tmp_path / "in.jpg", size=(37, 23), seed=5)
    argv = ["--model", int8_file, "--input", src, "--device", "cpu"]
    err = run_stylize(capsys, *argv, "--output", tmp_path / "q.png", check_rc=0).stderr
    assert f"model {int8_file} (onnxruntime, int8) on cpu (float32); 1 image(s)" in err
    argv = ["--model", trained, "--input", src, "--runtime", "torch"]
    run_stylize(capsys, *argv, "--output", tmp_path / "t.png", check_rc=0)
    int8, fp32 = (np.asarray(Image.open(tmp_path / n)) for n in ("q.png", "t.png"))
    assert int8.shape == (23, 37, 3) and output_psnr(int8, fp32) > 30  # bound as above


def test_output_psnr():
    a = np.zeros((3, 4, 4), np.uint8)
    assert output_psnr(a, a) == float("inf")
    assert output_psnr(a, a + 1) == pytest.approx(10 * np.log10(255**2))  # MSE 1
    # floats count as the saved images would: clamped to 0-255 and rounded
    assert output_psnr(torch.full((3, 4, 4), -7.0), torch.full((3, 4, 4), 0.4)) == float("inf")
    assert output_psnr(torch.zeros(3, 4, 4), a + 1) == pytest.approx(48.13, abs=0.01)
    with pytest.raises(ValueError, match="shapes differ"):
        output_psnr(a, a[:2])


# --- the runtime of a model file --------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    torch.manual_seed(0)
    net = TransformerNet(**CHANNELS).eval()
    folder = tmp_path_factory.mktemp("files")
    return {
        "pth": save_model_file(net, folder / "m.pth"),
        "onnx": export_onnx(net, folder / "m.onnx"),
        "torchscript": export_torchscript(net, folder / "m.pt"),
    }


@pytest.mark.parametrize(
    "options,expected",
    [
        ({}, "onnxruntime"),  # a plain model file on the CPU: the faster runtime
        ({"precision": "fp32"}, "onnxruntime"),
        ({"runtime": "torch"}, "torch"),
        ({"runtime": "onnxruntime", "precision": "fp32"}, "onnxruntime"),
        ({"tile_size": 64}, "torch"),  # options only PyTorch has
        ({"style": 1}, "torch"),
        ({"style": [0.5, 0.5]}, "torch"),
        ({"compile": True}, "torch"),
        ({"cuda_graphs": True}, "torch"),
        ({"precision": "bf16"}, "torch"),
        ({"precision": "fp16"}, "torch"),
        ({"style": 0}, "torch"),  # a style asked for: the startup line lists the styles
        ({"tile_size": 0, "progress": print}, "onnxruntime"),
    ],
)
def test_pick_runtime_for_a_pytorch_model_file(files, options, expected):
    assert pick_runtime(files["pth"], device="cpu", **options) == expected


def test_pick_runtime_keeps_torch_off_the_cpu_and_where_bf16_is_native(files, monkeypatch):
    with monkeypatch.context() as m:  # a GPU: PyTorch is the fast path (docs/deployment.md)
        m.setattr(runners, "pick_device", lambda name: torch.device("cuda"))
        assert pick_runtime(files["pth"], device="cuda") == "torch"
    with monkeypatch.context() as m:  # precision auto means bf16 there: only PyTorch has it
        m.setattr(inference, "native_bf16", lambda device: True)
        assert pick_runtime(files["pth"], device="cpu") == "torch"
        assert pick_runtime(files["pth"], device="cpu", precision="fp32") == "onnxruntime"


def test_pick_runtime_without_onnxruntime(files, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    assert pick_runtime(files["pth"], device="cpu") == "torch"
    with pytest.raises(ConfigError) as e:
        pick_runtime(files["pth"], device="cpu", runtime="onnxruntime")
    assert str(e.value) == (
        f"{files['pth']}: --runtime onnxruntime needs onnxruntime: "
        'pip install "transformer-net[onnx]"'
    )


def test_pick_runtime_of_traced_files(files):
    assert pick_runtime(files["onnx"], runtime="onnxruntime") == "onnxruntime"
    assert pick_runtime(files["torchscript"]) == "torchscript"
    for kind, runtime, what in [
        ("onnx", "torch", "an ONNX"),
        ("torchscript", "torch", "a TorchScript"),
        ("torchscript", "onnxruntime", "a TorchScript"),
    ]:
        with pytest.raises(ConfigError) as e:
            pick_runtime(files[kind], runtime=runtime)
        assert str(e.value).startswith(
            f"{files[kind]}: --runtime {runtime} cannot run {what} file; "
        )
    with pytest.raises(ConfigError, match="--runtime must be one of auto, torch, onnxruntime"):
        pick_runtime(files["pth"], runtime="tensorrt")


def test_forced_onnxruntime_refuses_torch_options(files):
    with pytest.raises(ConfigError) as e:
        open_stylizer(files["pth"], device="cpu", runtime="onnxruntime", tile_size=64)
    assert str(e.value) == (
        f"{files['pth']}: --runtime onnxruntime runs the model in fp32, style 0, in one pass; "
        "for --tile-size use --runtime torch or auto"
    )


def test_stylize_says_which_runtime_it_uses(files, tmp_path, capsys):
    src = write_photo(tmp_path / "in.png", size=(21, 17))
    argv = ["--model", files["pth"], "--input", src, "--device", "cpu", "--overwrite"]
    out = tmp_path / "o.png"
    err = run_stylize(capsys, *argv, "--output", out, check_rc=0).stderr
    assert f"model {files['pth']} (onnxruntime, cached ONNX export) on cpu (float32)" in err
    onnx_out = np.asarray(Image.open(out)).astype(int)
    err = run_stylize(capsys, *argv, "--output", out, "--tile-size", "64", check_rc=0).stderr
    assert f"model {files['pth']} (pytorch) on cpu (float32)" in err
    assert np.abs(np.asarray(Image.open(out)).astype(int) - onnx_out).max() <= 1  # rounding
    argv = ["--model", files["onnx"], "--input", src, "--output", tmp_path / "x.png"]
    err = run_stylize(capsys, *argv, "--runtime", "torch", check_rc=2).stderr
    assert err.startswith(f"error: {files['onnx']}: --runtime torch cannot run an ONNX file")
    assert err.count("\n") == 1


def test_multi_style_models_stay_in_pytorch_unless_forced(tmp_path):
    torch.manual_seed(0)
    net = TransformerNet(**CHANNELS, num_styles=2).eval()
    with torch.no_grad():
        net.in5.bias[1] += 100  # style 1 differs from style 0
    path = save_model_file(net, tmp_path / "multi.pth")
    assert pick_runtime(path, device="cpu") == "torch"  # its styles, its startup line
    forced = open_stylizer(path, device="cpu", runtime="onnxruntime")
    assert type(forced) is OnnxStylizer  # the export runs style 0
    image = torch.randint(0, 256, (3, 19, 23), dtype=torch.uint8)
    style0 = TorchStylizer(model_path=path, device="cpu", precision="fp32", style=0)
    style1 = TorchStylizer(model_path=path, device="cpu", precision="fp32", style=1)
    assert (forced(image).int() - style0(image).int()).abs().max() <= 1
    assert (forced(image).int() - style1(image).int()).abs().max() > 1


# --- the cache of ONNX exports ------------------------------------------------------


@pytest.fixture
def exports(monkeypatch):
    """Counts the ONNX exports the runners make."""
    made = []

    def counting(model, path, **kwargs):
        made.append(path)
        return export_onnx(model, path, **kwargs)

    monkeypatch.setattr(runners, "export_onnx", counting)
    return made


def test_cache_is_made_once_reused_and_renewed_when_the_file_changes(
    tmp_path, cache, exports, capsys
):
    torch.manual_seed(0)
    model = save_model_file(TransformerNet(**CHANNELS), tmp_path / "m.pth")
    src = write_photo(tmp_path / "in.png", size=(16, 12))
    argv = ["--model", model, "--input", src, "--output", tmp_path / "o.png", "--overwrite"]
    run_stylize(capsys, *argv, check_rc=0)
    (entry,) = cache.iterdir()
    assert entry == runners.onnx_cache_path(model) and len(exports) == 1
    inode = entry.stat().st_ino  # an atomic rewrite would be a new file
    run_stylize(capsys, *argv, check_rc=0)
    assert len(exports) == 1 and entry.stat().st_ino == inode  # reused, not rewritten
    torch.manual_seed(1)  # retrained: same path, other bytes
    save_model_file(TransformerNet(**CHANNELS), model)
    run_stylize(capsys, *argv, check_rc=0)
    assert len(exports) == 2 and len(list(cache.iterdir())) == 2
    assert runners.onnx_cache_path(model) != entry


def test_the_cache_keeps_the_most_recently_used_exports(tmp_path, cache, exports):
    """Every retrained model gets an entry: the least recently used ones go."""
    image = torch.randint(0, 256, (3, 13, 11), dtype=torch.uint8)
    models = []
    for seed in range(4):
        torch.manual_seed(seed)
        models.append(save_model_file(TransformerNet(**CHANNELS), tmp_path / f"m{seed}.pth"))
    for k, model in enumerate(models[:3]):
        open_stylizer(model, device="cpu")(image)
        entry = runners.onnx_cache_path(model)
        os.utime(entry, (1000 + k, 1000 + k))  # used in this order, a second apart
    open_stylizer(models[0], device="cpu")  # used again: now the most recent
    runners.prune_onnx_cache(cache, keep=runners.onnx_cache_path(models[3]), entries=3)
    left = set(cache.iterdir())
    assert left == {runners.onnx_cache_path(m) for m in (models[0], models[2])}
    assert len(exports) == 3  # models[0] was reused, not exported again
    runners.prune_onnx_cache(cache, keep=runners.onnx_cache_path(models[0]), entries=1)
    assert set(cache.iterdir()) == {runners.onnx_cache_path(models[0])}


def test_corrupt_cache_entry_is_rebuilt(files, tmp_path, cache, exports):
    image = torch.randint(0, 256, (3, 13, 11), dtype=torch.uint8)
    expected = open_stylizer(files["pth"], device="cpu")(image)
    entry = runners.onnx_cache_path(files["pth"])
    entry.write_bytes(b"\x08\x07 damaged on disk")
    stylizer = open_stylizer(files["pth"], device="cpu")
    assert torch.equal(stylizer(image), expected) and len(exports) == 2
    assert stylizer.runtime == "onnxruntime, cached ONNX export"
    assert onnx.load(str(entry)).graph.node  # a whole model again


# --- threads -----------------------------------------------------------------------


def test_threads_option(files, tmp_path, capsys, monkeypatch):
    src = write_photo(tmp_path / "in.png", size=(8, 8))
    argv = ["--model", files["pth"], "--input", src, "--output", tmp_path / "o.png"]
    for bad, message in [("0", "must be >= 1, got 0"), ("two", "expected a whole number")]:
        err = run_stylize(capsys, *argv, "--threads", bad, check_rc=2).stderr
        assert err.startswith("error: argument --threads: ") and message in err
    torch_threads = []
    monkeypatch.setattr(torch, "set_num_threads", torch_threads.append)  # no global change
    opened = []
    real = runners.OnnxStylizer.__init__

    def recording(self, **kwargs):
        opened.append(kwargs["threads"])
        real(self, **kwargs)

    monkeypatch.setattr(runners.OnnxStylizer, "__init__", recording)
    run_stylize(capsys, *argv, "--threads", "1", check_rc=0)
    assert torch_threads == [1] and opened == [1]
    run_stylize(capsys, *argv, "--overwrite", check_rc=0)
    assert torch_threads[-1] == opened[-1] == inference.default_threads()


def test_onnx_session_threads(files):
    stylizer = OnnxStylizer(model_path=files["onnx"], device="cpu", threads=1)
    assert stylizer.session.get_session_options().intra_op_num_threads == 1


def test_default_threads_is_a_count_of_usable_cores():
    import os

    assert 1 <= inference.default_threads() <= (os.cpu_count() or 1)
