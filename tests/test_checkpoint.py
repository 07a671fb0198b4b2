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
    with pytest.raises(ModelFileError, match="is a directory"):
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
    with pytest.raises(ModelFileError, match="other.pth: not a TransformerNet state dict"):
        load_model(tmp_path / "other.pth")
    sd = TransformerNet().state_dict()
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "extra.pth")
    with pytest.raises(ModelFileError, match="extra.pth: not a TransformerNet model: 1 unknown"):
        load_model(tmp_path / "extra.pth")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _Evil()}, path)
    with pytest.raises(ModelFileError, match="evil.pth: refused to load"):
        read_model_file(path)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"state_dict": _Evil()}))
    with pytest.raises(ModelFileError, match="raw.pkl: corrupt or not a PyTorch file"):
        read_model_file(raw)
    assert "pwned" not in capsys.readouterr().out


def test_export_script_turns_a_lightning_checkpoint_into_a_model_file(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

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
    cmd = [sys.executable, "scripts/export_model.py", tmp_path / "last.ckpt", tmp_path / "wave.pth"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    model, meta = load_model(tmp_path / "wave.pth")
    assert meta["style"] == "wave" and meta["global_step"] == 12
    # What evaluate.py needs to rebuild the training loss.
    assert meta["style_image"] == "styles/wave.jpg" and meta["loss"]["style_weight"] == 1.0
    x = torch.rand(1, 3, 16, 16) * 255
    torch.testing.assert_close(model(x), net.eval()(x))
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "already exists" in proc.stderr
