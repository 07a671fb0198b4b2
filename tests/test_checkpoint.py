"""Model files: our format, Lightning checkpoints, PyTorch-examples state dicts."""

import pickle

import pytest
import torch
import torch.nn.functional as F

from transformer_net.checkpoint import (
    ModelFileError,
    load_model,
    read_model_file,
    save_model_file,
)
from transformer_net.model import TransformerNet


def examples_state_dict(legacy: bool, seed: int = 0) -> dict:
    """A state dict in the PyTorch examples' fast_neural_style layout, built from its key list."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(name, cin, cout, k):
        sd[f"{name}.conv2d.weight"] = (
            torch.randn(cout, cin, k, k, generator=g) * (1 / (cin * k * k)) ** 0.5
        )
        sd[f"{name}.conv2d.bias"] = torch.randn(cout, generator=g) * 0.1

    def norm(name, c):
        sd[f"{name}.weight"] = 1 + 0.1 * torch.randn(c, generator=g)
        sd[f"{name}.bias"] = 0.1 * torch.randn(c, generator=g)
        if legacy:  # old PyTorch saved these for InstanceNorm2d; they must be ignored
            sd[f"{name}.running_mean"] = torch.randn(c, generator=g)
            sd[f"{name}.running_var"] = torch.rand(c, generator=g) + 0.5

    conv("conv1", 3, 32, 9), norm("in1", 32)
    conv("conv2", 32, 64, 3), norm("in2", 64)
    conv("conv3", 64, 128, 3), norm("in3", 128)
    for i in range(1, 6):
        conv(f"res{i}.conv1", 128, 128, 3), norm(f"res{i}.in1", 128)
        conv(f"res{i}.conv2", 128, 128, 3), norm(f"res{i}.in2", 128)
    conv("deconv1", 128, 64, 3), norm("in4", 64)
    conv("deconv2", 64, 32, 3), norm("in5", 32)
    conv("deconv3", 32, 3, 9)
    return sd


def reference_forward(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """The examples' math written out functionally: 0-255 in, no output activation."""

    def conv(h, name, stride=1, upsample=False):
        if upsample:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
        w = sd[f"{name}.conv2d.weight"]
        h = F.pad(h, [w.shape[-1] // 2] * 4, mode="reflect")
        return F.conv2d(h, w, sd[f"{name}.conv2d.bias"], stride)

    def norm(h, name):
        return F.instance_norm(h, weight=sd[f"{name}.weight"], bias=sd[f"{name}.bias"], eps=1e-5)

    h = F.relu(norm(conv(x, "conv1"), "in1"))
    h = F.relu(norm(conv(h, "conv2", 2), "in2"))
    h = F.relu(norm(conv(h, "conv3", 2), "in3"))
    for i in range(1, 6):
        r = F.relu(norm(conv(h, f"res{i}.conv1"), f"res{i}.in1"))
        h = h + norm(conv(r, f"res{i}.conv2"), f"res{i}.in2")
    h = F.relu(norm(conv(h, "deconv1", upsample=True), "in4"))
    h = F.relu(norm(conv(h, "deconv2", upsample=True), "in5"))
    return conv(h, "deconv3")


@pytest.mark.parametrize("legacy", [False, True])
def test_pytorch_examples_state_dict_loads_and_matches_reference(tmp_path, legacy):
    sd = examples_state_dict(legacy)
    path = tmp_path / "mosaic.pth"
    torch.save(sd, path)
    model, meta = load_model(path)
    assert meta["source"] == "state dict"
    x = torch.rand(1, 3, 48, 64) * 255
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_forward(sd, x), rtol=1e-4, atol=1e-3)


def test_our_model_file_roundtrip_is_small_and_weights_only(tmp_path):
    net = TransformerNet(channels=(8, 16, 32), num_residual=2)
    path = save_model_file(net, tmp_path / "m.pth", meta={"style": "wave", "global_step": 7})
    raw = torch.load(path, weights_only=True)  # no pickle of arbitrary objects
    assert raw["format"] == "transformer-net" and raw["model_args"] == net.config
    assert set(raw) == {"format", "version", "model_args", "state_dict", "meta"}
    model, meta = load_model(path)
    assert meta == {"style": "wave", "global_step": 7}
    x = torch.rand(1, 3, 20, 24) * 255
    torch.testing.assert_close(model(x), net.eval()(x))
    assert path.stat().st_size < 1.2 * 4 * sum(p.numel() for p in net.parameters()) + 10_000


def test_widths_inferred_from_bare_state_dict(tmp_path):
    net = TransformerNet(channels=(4, 8, 12), num_residual=3)
    torch.save(net.state_dict(), tmp_path / "sd.pth")
    model, _ = load_model(tmp_path / "sd.pth")
    assert model.config == {"channels": [4, 8, 12], "num_residual": 3}


def test_missing_and_empty_and_directory(tmp_path):
    with pytest.raises(ModelFileError, match="nope.pth: model file not found"):
        load_model(tmp_path / "nope.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty.pth: empty file"):
        load_model(tmp_path / "empty.pth")
    with pytest.raises(ModelFileError, match="a folder without config.json and model.safetensors"):
        load_model(tmp_path)


def test_corrupt_and_truncated_files(tmp_path):
    (tmp_path / "text.pth").write_text("hello, I am not a model")
    with pytest.raises(ModelFileError, match="text.pth: corrupt or not a PyTorch file"):
        load_model(tmp_path / "text.pth")
    good = save_model_file(TransformerNet(channels=(4, 4, 4), num_residual=1), tmp_path / "g.pth")
    data = good.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="cut.pth: corrupt"):
        load_model(tmp_path / "cut.pth")


def test_other_architecture_is_rejected(tmp_path):
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(ModelFileError, match="other.pth: not a transformer-net model \\(no tensor"):
        load_model(tmp_path / "other.pth")
    sd = TransformerNet().state_dict()
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "extra.pth")
    with pytest.raises(ModelFileError, match="extra.pth: not a transformer-net model \\(1 unknown"):
        load_model(tmp_path / "extra.pth")


TINY = {"channels": (4, 8, 8), "num_residual": 1}


def _tiny_files() -> tuple[dict, dict]:
    """(our model file's dict, the network's state dict) of a tiny TransformerNet."""
    net = TransformerNet(**TINY)
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    ours = {
        "format": "transformer-net",
        "version": 1,
        "model_args": net.config,
        "state_dict": sd,
        "meta": {},
    }
    return ours, sd


def _lightning(sd, **extra) -> dict:
    return {
        "pytorch-lightning_version": "2.6.0",
        "global_step": 3,
        "state_dict": {f"transformer.{k}": v for k, v in sd.items()},
        **extra,
    }


def _malformed_cases() -> list[tuple[str, object, str]]:
    ours, sd = _tiny_files()
    bias = torch.zeros(4)
    return [
        ("args_list", {**ours, "model_args": [4, 8, 8]}, "'model_args' is a list, expected a dict"),
        ("args_missing", {k: v for k, v in ours.items() if k != "model_args"}, "no 'model_args'"),
        ("sd_missing", {k: v for k, v in ours.items() if k != "state_dict"}, "no 'state_dict'"),
        (
            "sd_list",
            {**ours, "state_dict": list(sd.values())},
            "'state_dict' is a list, expected a dict",
        ),
        ("meta_str", {**ours, "meta": "wave"}, "'meta' is a str, expected a dict"),
        ("version_str", {**ours, "version": "1"}, "'version' is a str, expected an int"),
        (
            "scalar_weight",
            {**ours, "state_dict": {**sd, "conv1.conv2d.bias": 0.5}},
            "state_dict['conv1.conv2d.bias'] is a float where a weight tensor should be",
        ),
        (
            "int_tensor",
            {**ours, "state_dict": {**sd, "in1.bias": bias.long()}},
            "state_dict['in1.bias'] is a torch.int64 tensor, expected floating point",
        ),
        (
            "huge_args",
            {**ours, "model_args": {**TINY, "num_residual": 10**9}},
            "model_args num_residual=1000000000 does not match the weights (1)",
        ),
        (
            "wrong_shape",
            {**sd, "in1.bias": torch.zeros(5)},
            "'in1.bias' has shape (5,), expected (4,)",
        ),
        (
            "flat_conv",
            {**sd, "conv1.conv2d.weight": torch.zeros(4)},
            "'conv1.conv2d.weight' has shape (4,), expected a (out, in, k, k) convolution weight",
        ),
        ("bare_scalar", {**sd, "in2.weight": 1}, "'in2.weight' is an int where a weight tensor"),
        (
            "no_tensors",
            {"lr": 0.1, "epoch": 3},
            "a dict without weight tensors (keys: 'lr', 'epoch')",
        ),
        (
            "light_sd_list",
            {**_lightning(sd), "state_dict": [1, 2]},
            "'state_dict' is a list, expected a dict",
        ),
        (
            "light_scalar",
            _lightning({**sd, "in1.weight": 2.0}),
            "state_dict['transformer.in1.weight'] is a float where a weight tensor should be",
        ),
        (
            "light_hparams",
            _lightning(sd, hyper_parameters=["model"]),
            "'hyper_parameters' is a list, expected a dict",
        ),
        (
            "light_model_args",
            _lightning(sd, hyper_parameters={"model": "johnson"}),
            "'hyper_parameters.model' is a str, expected a dict",
        ),
        ("a_list", [1.0, 2.0], "the file holds a list, not a dict of weights"),
        ("a_float", 3.0, "the file holds a float, not a dict of weights"),
    ]


@pytest.mark.parametrize("name,obj,why", _malformed_cases(), ids=[c[0] for c in _malformed_cases()])
def test_malformed_model_files_say_what_is_wrong_in_one_line(tmp_path, name, obj, why):
    path = tmp_path / f"{name}.pth"
    torch.save(obj, path)
    with pytest.raises(ModelFileError) as e:
        load_model(path)  # never a KeyError, AttributeError or TypeError
    assert str(e.value).startswith(f"{path}: not a transformer-net model ("), str(e.value)
    assert why in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("layout", ["model file", "lightning", "state dict"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_with_nan_or_inf_are_refused(tmp_path, layout, bad):
    ours, sd = _tiny_files()
    sd["res1.conv2.conv2d.weight"][0, 0, 0, 0] = bad  # one value is enough for a black image
    obj = {"model file": ours, "lightning": _lightning(sd), "state dict": sd}[layout]
    path = tmp_path / "diverged.pth"
    torch.save(obj, path)
    with pytest.raises(ModelFileError) as e:
        load_model(path)
    assert str(e.value) == (
        f"{path}: weights hold NaN/inf (1 of 576 values of 'res1.conv2.conv2d.weight'): "
        "the model would give black images (training diverged?)"
    )


class _Evil:
    """Not allowlisted by torch: unpickling it would call print (any code could run)."""

    def __reduce__(self):
        return (print, ("pwned",))


class _Payload:
    """An ordinary object of a non-allowlisted class."""

    def __init__(self):
        self.weights = [1.0, 2.0]


def test_pickled_code_is_refused(tmp_path, capsys):
    refused = []
    for name, obj, save in [
        ("evil.pth", _Evil(), torch.save),
        ("payload.pth", _Payload(), torch.save),
        # A raw pickle of protocol 5: torch stops at its FRAME opcode before it sees
        # the class, so the refusal must come from reading the opcodes.
        ("raw.pkl", _Payload(), lambda o, p: p.write_bytes(pickle.dumps(o, protocol=5))),
        ("raw2.pkl", _Evil(), lambda o, p: p.write_bytes(pickle.dumps(o, protocol=2))),
    ]:
        path = tmp_path / name
        save({"state_dict": obj}, path)
        with pytest.raises(ModelFileError) as e:
            read_model_file(path)
        refused.append(str(e.value))
        assert str(e.value).startswith(f"{path}: refused to load: it holds a pickled Python object")
        assert "could run code" in str(e.value) and "\n" not in str(e.value)
    assert "(print)" in refused[0]  # torch drops the "builtins." of builtins
    assert all("test_checkpoint._Payload)" in r for r in refused[1:3])
    assert "pwned" not in capsys.readouterr().out
    # A file that is merely damaged is not called dangerous: the two messages differ.
    good = save_model_file(TransformerNet(**TINY), tmp_path / "good.pth")
    data = bytearray(good.read_bytes())
    start = data.find(b"data.pkl") + 40  # inside the pickle, past the zip entry header
    data[start : start + 16] = b"\xfe" * 16
    for name, content in [("flipped.pth", bytes(data)), ("noise.pth", bytes(range(256)) * 4)]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ModelFileError) as e:
            read_model_file(tmp_path / name)
        assert str(e.value).startswith(f"{tmp_path / name}: corrupt or not a PyTorch file (")
        assert "could run code" not in str(e.value)


def test_refusal_is_recognized_in_other_torch_wordings(tmp_path, monkeypatch):
    """torch words the refusal differently across versions: each names the global."""
    import transformer_net.checkpoint as checkpoint

    path = save_model_file(TransformerNet(**TINY), tmp_path / "m.pth")
    for message in [
        "Weights only load failed. ... Unsupported global: GLOBAL os.system was not an allowed "
        "global by default.",
        "Weights only load failed. Trying to load unsupported GLOBAL os.system whose module os "
        "is blocked.",
        "Weights only load failed. WeightsUnpickler error: Trying to call reduce for "
        "unrecognized function os.system",
        "Weights only load failed. Please use `torch.serialization.add_safe_globals([os.system])`",
    ]:

        def fail(*args, message=message, **kwargs):
            raise pickle.UnpicklingError(message)

        monkeypatch.setattr(checkpoint.torch, "load", fail)
        with pytest.raises(ModelFileError, match=r"refused to load: .*\(os\.system\), which"):
            read_model_file(path)


def test_export_script_turns_a_lightning_checkpoint_into_a_model_file(tmp_path, capsys):
    from tests.conftest import script_main

    net = TransformerNet(channels=(4, 8, 8), num_residual=1)
    ckpt = {
        "pytorch-lightning_version": "2.6.0",
        "global_step": 12,
        "state_dict": {f"transformer.{k}": v for k, v in net.state_dict().items()},
        "hyper_parameters": {
            "model": net.config,
            "style_name": "wave",
            "style_image": "styles/wave.jpg",
            "loss": {"preprocessing": "caffe", "style_weight": 1.0},
        },
    }
    torch.save(ckpt, tmp_path / "last.ckpt")
    export = script_main("export_model")
    argv = [str(tmp_path / "last.ckpt"), str(tmp_path / "wave.pth")]
    assert export(argv) == 0, capsys.readouterr().err
    model, meta = load_model(tmp_path / "wave.pth")
    assert meta["style"] == "wave" and meta["global_step"] == 12
    # What evaluate.py needs to rebuild the training loss.
    assert meta["style_image"] == "styles/wave.jpg" and meta["loss"]["style_weight"] == 1.0
    x = torch.rand(1, 3, 16, 16) * 255
    torch.testing.assert_close(model(x), net.eval()(x))
    assert export(argv) == 2 and "already exists" in capsys.readouterr().err
