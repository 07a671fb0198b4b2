import urllib.error

import pytest
import torch

from tests.conftest import CAFFE_VGG, require
from transformer_net.loss import PerceptualLoss, gram_matrix, grid_pattern, total_variation
from transformer_net.vgg import (
    LAYER_INDEX,
    Preprocess,
    VGGFeatures,
    VGGWeightsError,
    build_vgg16_features,
)


def test_gram_matrix_on_hand_made_tensor():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)  # C=2, H=1, W=2
    expected = torch.tensor([[5.0, 11.0], [11.0, 25.0]]) / (2 * 1 * 2)
    torch.testing.assert_close(gram_matrix(f)[0], expected)


def test_gram_matrix_is_fp32_under_bf16_autocast():
    f = torch.randn(2, 4, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = gram_matrix(f.to(torch.bfloat16))
    assert g.dtype == torch.float32 and g.shape == (2, 4, 4)


def test_total_variation_values():
    img = torch.zeros(1, 3, 4, 4)
    assert total_variation(img) == 0
    img[..., :, 2:] = 10.0  # one vertical edge: 3 of 12 horizontal pairs per channel differ by 10
    assert total_variation(img).item() == pytest.approx(100 * 4 / 12)


def test_torchvision_preprocessing_by_hand():
    x = torch.tensor([255.0, 0.0, 127.5]).view(1, 3, 1, 1)
    y = Preprocess(convention="torchvision")(x).flatten()
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0.5 - 0.406) / 0.225]
    torch.testing.assert_close(y, torch.tensor(expected))
    assert x.flatten().tolist() == [255.0, 0.0, 127.5]  # input untouched


def test_caffe_preprocessing_by_hand():
    x = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)  # R, G, B
    y = Preprocess(convention="caffe")(x).flatten()
    torch.testing.assert_close(y, torch.tensor([30 - 103.939, 20 - 116.779, 10 - 123.68]))
    assert x.flatten().tolist() == [10.0, 20.0, 30.0]


def test_unknown_preprocessing_rejected():
    with pytest.raises(ValueError, match="preprocessing"):
        Preprocess(convention="bgr")


def _reference_features(last="relu4_3"):
    torch.manual_seed(0)
    return build_vgg16_features(last)


@pytest.mark.parametrize("layout", ["full", "features_prefixed", "features_bare", "wrapped"])
def test_every_vgg_state_dict_layout_loads(tmp_path, layout):
    ref = build_vgg16_features("relu5_3")
    torch.nn.init.normal_(ref[0].weight)
    bare = ref.state_dict()
    prefixed = {f"features.{k}": v for k, v in bare.items()}
    sd = {
        "full": {**prefixed, "classifier.0.weight": torch.zeros(4096, 25088 // 64)},
        "features_prefixed": prefixed,
        "features_bare": bare,
        "wrapped": {"state_dict": prefixed},
    }[layout]
    path = tmp_path / "vgg.pth"
    torch.save(sd, path)
    net = VGGFeatures(layers=["relu1_2", "relu3_3"], weights=str(path), preprocessing="torchvision")
    assert len(net.features) == LAYER_INDEX["relu3_3"] + 1  # truncated after the deepest layer
    torch.testing.assert_close(net.features[0].weight, ref[0].weight)
    torch.testing.assert_close(net.features[14].bias, ref[14].bias)


def test_vgg_missing_file(tmp_path):
    with pytest.raises(VGGWeightsError, match="nope.pth: VGG-16 weights file not found"):
        VGGFeatures(layers=["relu1_2"], weights=str(tmp_path / "nope.pth"), preprocessing="caffe")


def test_vgg_corrupt_file(tmp_path):
    path = tmp_path / "bad.pth"
    path.write_bytes(b"this is not a torch file")
    with pytest.raises(VGGWeightsError, match="bad.pth: cannot read VGG-16 weights"):
        VGGFeatures(layers=["relu1_2"], weights=str(path), preprocessing="caffe")


def test_vgg_wrong_tensors(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(VGGWeightsError, match="resnet.pth: not a VGG-16 state dict"):
        VGGFeatures(layers=["relu1_2"], weights=str(path), preprocessing="caffe")
    torch.save(
        {"features.0.weight": torch.zeros(32, 3, 3, 3), "features.0.bias": torch.zeros(32)}, path
    )
    with pytest.raises(VGGWeightsError, match="has shape"):
        VGGFeatures(layers=["relu1_1"], weights=str(path), preprocessing="caffe")


class _Opaque:  # a pickled object other than a tensor
    pass


def test_vgg_file_with_code_is_refused_without_torchs_retry_advice(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3), "extra": _Opaque()}, path)
    with pytest.raises(VGGWeightsError) as info:
        VGGFeatures(layers=["relu1_1"], weights=str(path), preprocessing="caffe")
    message = str(info.value)
    assert message.startswith(f"{path}: refused: ") and "could run code" in message
    assert "_Opaque" in message and "\n" not in message
    assert "weights_only" not in message and "trust" not in message


def test_imagenet_download_failure_tells_how_to_go_offline(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(VGGWeightsError) as info:
        VGGFeatures(layers=["relu1_2"], weights="imagenet", preprocessing="torchvision")
    message = str(info.value)
    assert "download.pytorch.org" in message and "Temporary failure" in message
    # No tool named its own way: the message names both (train.py, stylize/evaluate).
    assert "loss.vgg_weights=/path/vgg16.pth (train.py)" in message
    assert "--vgg-weights /path/vgg16.pth --preprocessing torchvision" in message


def test_imagenet_uses_torchvisions_cached_file(tmp_path, monkeypatch):
    full = {f"features.{k}": v for k, v in build_vgg16_features("relu5_3").state_dict().items()}
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    cached = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"  # torchvision's name
    cached.parent.mkdir(parents=True)
    torch.save(full, cached)
    net = VGGFeatures(layers=["relu2_2"], weights="imagenet", preprocessing="torchvision")
    torch.testing.assert_close(net.features[5].weight, full["features.5.weight"])


def test_loss_network_is_frozen_and_stays_in_eval():
    loss = PerceptualLoss(style_image=torch.rand(3, 32, 32) * 255, vgg_weights="random")
    loss.train()
    assert not loss.vgg.training
    assert all(not p.requires_grad for p in loss.vgg.parameters())
    assert loss.target_gram("relu4_3").shape == (1, 512, 512)


def test_content_loss_zero_for_identical_inputs_and_parts_add_up():
    torch.manual_seed(0)
    loss = PerceptualLoss(
        style_image=torch.rand(3, 32, 32) * 255, vgg_weights="random", tv_weight=1e-3
    )
    x = torch.rand(2, 3, 32, 32) * 255
    out = loss(x, x)
    assert out["content"].item() == 0.0
    assert out["style"].item() > 0
    parts = out["content"] + out["style"] + out["tv"]
    torch.testing.assert_close(out["total"], parts)
    layer_sum = sum(v for k, v in out.items() if k.startswith("style/"))
    torch.testing.assert_close(layer_sum, out["style"])
    y = x + torch.randn_like(x) * 10
    assert loss(y, x)["content"].item() > 0


def test_style_loss_zero_for_the_style_image_itself():
    style = torch.rand(3, 32, 32) * 255
    loss = PerceptualLoss(style_image=style, vgg_weights="random")
    out = loss(style[None], style[None])
    assert out["style"].item() == pytest.approx(0.0, abs=1e-6)


def test_per_layer_weights_and_validation():
    style = torch.rand(3, 32, 32) * 255
    loss = PerceptualLoss(
        style_image=style,
        vgg_weights="random",
        style_layers={"relu2_2": 2.0},
        content_layers={"relu1_2": 1.0},
    )
    assert [k for k in loss(style[None], style[None]) if k.startswith("style/")] == [
        "style/relu2_2"
    ]
    with pytest.raises(ValueError, match="unknown style layer"):
        PerceptualLoss(style_image=style, vgg_weights="random", style_layers={"relu9_9": 1.0})
    for bad in (-1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="style_weight must be >= 0"):
            PerceptualLoss(style_image=style, vgg_weights="random", style_weight=bad)


def test_real_caffe_vgg_file():
    path = require(CAFFE_VGG)
    net = VGGFeatures(layers=["relu1_2", "relu4_3"], weights=str(path), preprocessing="caffe")
    feats = net(torch.full((1, 3, 32, 32), 128.0))
    assert feats["relu4_3"].shape == (1, 512, 4, 4)
    assert torch.isfinite(feats["relu4_3"]).all() and feats["relu1_2"].abs().sum() > 0


def test_default_style_weight_follows_the_vgg_release():
    style = torch.rand(3, 16, 16) * 255
    for preprocessing, expected in (("torchvision", 1e5), ("caffe", 1.0)):
        loss = PerceptualLoss(style_image=style, vgg_weights="random", preprocessing=preprocessing)
        assert loss.style_weight == expected


def test_grid_pattern_finds_a_fixed_4px_texture_and_not_the_photo():
    """grid_pattern: a texture repeated every 4 px comes back; a smooth image gives ~0."""
    torch.manual_seed(0)
    smooth = torch.nn.functional.interpolate(
        torch.rand(2, 3, 8, 8) * 255, size=(128, 96), mode="bilinear"
    )
    tile = torch.randn(1, 3, 4, 4) * 3
    tile = tile - tile.mean(dim=(2, 3), keepdim=True)  # (1, 3, 4, 4), zero mean per channel
    patterned = smooth + tile.repeat(1, 1, 32, 24)
    assert grid_pattern(smooth).abs().max() < 0.3
    torch.testing.assert_close(
        grid_pattern(patterned), tile.expand(2, -1, -1, -1), atol=0.3, rtol=0
    )
    # Sizes that are not multiples of 4 drop the last rows and columns.
    assert grid_pattern(patterned[..., :127, :95]).shape == (2, 3, 4, 4)

    style = torch.rand(3, 32, 32) * 255
    loss = PerceptualLoss(style_image=style, vgg_weights="random", grid_weight=10.0)
    out = loss(patterned, smooth)
    parts = out["content"] + out["style"] + out["tv"] + out["grid"]
    torch.testing.assert_close(out["total"], parts)
    assert out["grid"].item() > 100 * loss(smooth, smooth)["grid"].item()
    assert "grid" not in PerceptualLoss(style_image=style, vgg_weights="random")(smooth, smooth)
    with pytest.raises(ValueError, match="grid_weight must be >= 0"):
        PerceptualLoss(style_image=style, vgg_weights="random", grid_weight=-1)
