"""The model family (configs/model/): every preset trains, saves and exports like the default."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import REPO
from tests.test_train import make_cfg, tiny_overrides
from train import train
from transformer_net.checkpoint import load_model
from transformer_net.model import TransformerNet

PRESETS = sorted(p.stem for p in (REPO / "configs" / "model").glob("*.yaml"))


def test_the_family_has_the_default_and_smaller_presets():
    assert {"johnson", "half", "slim", "tiny"} <= set(PRESETS)
    params = {}
    for name in ("johnson", "half", "slim", "tiny"):
        net = TransformerNet(**OmegaConf.load(REPO / "configs" / "model" / f"{name}.yaml"))
        params[name] = sum(p.numel() for p in net.parameters())
    assert params["johnson"] > params["half"] > params["slim"] > params["tiny"]


@pytest.mark.parametrize("preset", PRESETS)
def test_a_preset_trains_and_its_model_file_rebuilds_it(tmp_path, photo_dir, style_file, preset):
    run = tiny_overrides(tmp_path, photo_dir, style_file, steps=2)
    overrides = [o for o in run if not o.startswith("model.")]
    result = train(make_cfg([*overrides, f"model={preset}"]))
    model, meta = load_model(result["model_file"])
    expected = OmegaConf.to_container(make_cfg([f"model={preset}"]).model)
    assert list(model.channels) == list(expected["channels"])
    assert model.num_residual == expected["num_residual"] and meta["global_step"] == 2


@pytest.mark.parametrize("preset", PRESETS)
def test_a_preset_exports_to_onnx_with_the_same_output(tmp_path, preset):
    pytest.importorskip("onnxruntime")
    from transformer_net.export import export_onnx
    from transformer_net.runners import open_stylizer

    args = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "model" / f"{preset}.yaml"))
    torch.manual_seed(0)
    net = TransformerNet(**args).eval()
    path = export_onnx(net, Path(tmp_path) / f"{preset}.onnx")
    image = (torch.rand(3, 37, 52) * 255).to(torch.uint8)  # odd sizes: the padding path
    onnx = open_stylizer(path, device="cpu")(image)
    with torch.no_grad():
        eager = net(image[None].float())[0].clamp(0, 255).round().to(torch.uint8)
    assert (onnx.int() - eager.int()).abs().max() <= 1
