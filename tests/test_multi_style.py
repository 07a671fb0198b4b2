"""Multi-style networks (conditional instance norm, Dumoulin et al. 2017): model,
loss, checkpoint loading, a real training run and stylize.py's style options."""

import contextlib
import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import write_photo
from tests.test_train import make_cfg, scalars, tiny_overrides
from transformer_net.checkpoint import load_model, save_model_file
from transformer_net.errors import ConfigError
from transformer_net.inference import TorchStylizer
from transformer_net.loss import PerceptualLoss
from transformer_net.model import ConditionalInstanceNorm2d, TransformerNet
from transformer_net.stylize_cli import main as stylize_main

TINY = {"channels": (8, 16, 32), "num_residual": 1}
NORMS = ["in1", "in2", "in3", "res1.in1", "res1.in2", "in4", "in5"]
# The state dict of a single-style network, as the PyTorch examples name it.
SINGLE_STYLE_KEYS = [
    f"{layer}.{p}"
    for layer in [
        "conv1.conv2d",
        "in1",
        "conv2.conv2d",
        "in2",
        "conv3.conv2d",
        "in3",
        "res1.conv1.conv2d",
        "res1.in1",
        "res1.conv2.conv2d",
        "res1.in2",
        "deconv1.conv2d",
        "in4",
        "deconv2.conv2d",
        "in5",
        "deconv3.conv2d",
    ]
    for p in ("weight", "bias")
]


def multi_net(num_styles: int = 3, seed: int = 0) -> TransformerNet:
    """A tiny multi-style net whose per-style gammas/betas differ (not the ones/zeros init)."""
    torch.manual_seed(seed)
    net = TransformerNet(**TINY, num_styles=num_styles).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, ConditionalInstanceNorm2d):
                m.weight.copy_(1 + 0.5 * torch.randn_like(m.weight))
                m.bias.copy_(0.5 * torch.randn_like(m.bias))
    return net


def test_single_style_state_dict_keys_are_unchanged():
    net = TransformerNet(**TINY)
    assert list(net.state_dict()) == SINGLE_STYLE_KEYS
    assert net.config == {"channels": [8, 16, 32], "num_residual": 1}
    assert not any(isinstance(m, ConditionalInstanceNorm2d) for m in net.modules())


def test_multi_style_network_has_conditional_norms_with_same_names():
    net = TransformerNet(**TINY, num_styles=3)
    sd = net.state_dict()
    assert list(sd) == SINGLE_STYLE_KEYS  # same names, per-style shapes
    assert sd["in1.weight"].shape == (3, 8) and sd["res1.in2.bias"].shape == (3, 32)
    assert net.config == {"channels": [8, 16, 32], "num_residual": 1, "num_styles": 3}
    norms = [net.get_submodule(n) for n in NORMS]
    assert all(isinstance(m, ConditionalInstanceNorm2d) for m in norms)
    # The normalization stays an nn.InstanceNorm2d (hooks on instance norms find it).
    inner = [m for m in net.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    assert len(inner) == len(NORMS) and not any(m.affine for m in inner)
    assert TransformerNet(**net.config).state_dict()["in5.weight"].shape == (3, 8)


@pytest.mark.parametrize(
    "style",
    [None, 2, torch.tensor([0.2, 0.3, 0.5]), torch.tensor([0, 2]), torch.rand(2, 3)],
    ids=["none", "index", "mix", "per-image-index", "per-image-mix"],
)
def test_output_shapes_for_every_kind_of_style(style):
    y = multi_net()(torch.rand(2, 3, 21, 18) * 255, style)
    assert y.shape == (2, 3, 21, 18) and torch.isfinite(y).all()


def test_styles_give_different_outputs_and_none_means_style_0():
    net, x = multi_net(), torch.rand(2, 3, 16, 16) * 255
    outs = [net(x, k) for k in range(3)]
    assert (outs[0] - outs[1]).abs().mean() > 0.1 and (outs[1] - outs[2]).abs().mean() > 0.1
    assert torch.equal(net(x), outs[0])
    # Per image: image 0 in style 2, image 1 in style 1.
    per_image = net(x, torch.tensor([2, 1]))
    torch.testing.assert_close(per_image[0], outs[2][0])
    torch.testing.assert_close(per_image[1], outs[1][1])


def test_one_hot_mix_equals_the_index_exactly():
    net, x = multi_net(2), torch.rand(1, 3, 16, 16) * 255
    assert torch.equal(net(x, torch.tensor([1.0, 0.0])), net(x, 0))
    assert torch.equal(net(x, torch.tensor([0.0, 1.0])), net(x, 1))


def test_half_mix_equals_averaged_gammas_and_betas():
    net, x = multi_net(2), torch.rand(1, 3, 16, 16) * 255
    mixed = net(x, torch.tensor([0.5, 0.5]))
    # The same network with each norm's two rows replaced by their average.
    averaged = TransformerNet(**TINY, num_styles=2).eval()
    sd = net.state_dict()
    for name in NORMS:
        for p in ("weight", "bias"):
            sd[f"{name}.{p}"] = sd[f"{name}.{p}"].mean(0, keepdim=True).expand(2, -1).clone()
    averaged.load_state_dict(sd)
    torch.testing.assert_close(mixed, averaged(x, 0), rtol=1e-5, atol=1e-4)
    assert (mixed - net(x, 0)).abs().mean() > 0.1  # really in between, not one style


@pytest.mark.parametrize(
    "style,message",
    [
        (3, "style index 3 out of range: the network has 3 style(s)"),
        (-1, "style index -1 out of range"),
        (torch.tensor([0, 5]), "style index 5 out of range"),
        (torch.tensor([0.5, 0.5]), "with N = 3 styles, got (2,)"),
        (torch.tensor([0, 1, 2]), "3 styles given for a batch of 2 images"),
    ],
)
def test_bad_styles_are_rejected(style, message):
    with pytest.raises(ValueError) as e:
        multi_net()(torch.rand(2, 3, 16, 16), style)
    assert message in str(e.value)


def test_single_style_network_accepts_only_style_0():
    net, x = TransformerNet(**TINY).eval(), torch.rand(1, 3, 16, 16) * 255
    assert torch.equal(net(x, 0), net(x))
    with pytest.raises(ValueError, match="style index 1 out of range: the network has 1 style"):
        net(x, 1)


def test_loss_holds_one_target_per_style_and_picks_the_batch_style():
    torch.manual_seed(0)
    styles = [torch.rand(3, 32, 24) * 255, torch.rand(3, 20, 32) * 255]  # sizes differ
    layers = {"content_layers": {"relu1_2": 1.0}, "style_layers": {"relu1_2": 1.0, "relu2_2": 1.0}}
    loss = PerceptualLoss(style_image=styles, vgg_weights="random", **layers)
    assert loss.num_styles == 2 and loss.target_gram("relu2_2").shape == (2, 128, 128)
    out, content = torch.rand(2, 3, 32, 32) * 255, torch.rand(2, 3, 32, 32) * 255
    for k, image in enumerate(styles):
        # One style's loss on the same (random) VGG: the same numbers.
        single = PerceptualLoss(style_image=image, vgg_weights="random", **layers)
        single.vgg.load_state_dict(loss.vgg.state_dict())
        single.set_style(image)
        torch.testing.assert_close(loss(out, content, k)["style"], single(out, content)["style"])
    assert loss(out, content, 0)["style"] != loss(out, content, 1)["style"]
    per_image = loss(out, content, torch.tensor([1, 1]))["style"]  # (B,) indices
    torch.testing.assert_close(per_image, loss(out, content, 1)["style"])
    with pytest.raises(ValueError, match="holds 2 styles"):
        loss(out, content)


def test_model_files_and_bare_state_dicts_rebuild_multi_style_networks(tmp_path):
    net = multi_net()
    path = save_model_file(net, tmp_path / "m.pth", meta={"styles": ["a", "b", "c"]})
    loaded, meta = load_model(path)
    assert loaded.num_styles == 3 and meta["styles"] == ["a", "b", "c"]
    x = torch.rand(1, 3, 16, 16) * 255
    assert torch.equal(loaded(x, 2), net(x, 2))
    torch.save(net.state_dict(), tmp_path / "bare.pth")  # num_styles from the shapes
    bare, _ = load_model(tmp_path / "bare.pth")
    assert bare.config["num_styles"] == 3 and torch.equal(bare(x, 1), net(x, 1))


def test_stylizer_styles(tmp_path):
    path = save_model_file(multi_net(), tmp_path / "m.pth", meta={"styles": ["a", "b", "c"]})
    image = torch.randint(0, 256, (3, 20, 24), dtype=torch.uint8)
    out = [
        TorchStylizer(model_path=path, device="cpu", precision="fp32", style=k)(image)
        for k in (0, 1)
    ]
    assert not torch.equal(out[0], out[1])
    one_hot = TorchStylizer(model_path=path, device="cpu", precision="fp32", style=[2, 0, 0])
    assert torch.equal(one_hot(image), out[0])  # normalized: [2, 0, 0] is style 0
    assert one_hot.style_names == ["a", "b", "c"] and one_hot.num_styles == 3
    for style, message in [
        (3, "style index 3 out of range: the model has 3 styles (0-2)"),
        ([1, 1], "2 style mixing weights for a model with 3 styles"),
        ([1, -1, 1], "must be >= 0 with a positive sum"),
        ([0, 0, 0], "must be >= 0 with a positive sum"),
    ]:
        with pytest.raises(ConfigError) as e:
            TorchStylizer(model_path=path, device="cpu", style=style)
        assert str(e.value).startswith(f"{path}: ") and message in str(e.value)


def _stylize(*args) -> SimpleNamespace:
    """stylize.py's main() in this process (no interpreter start per call)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = stylize_main([str(a) for a in args])
        except SystemExit as e:  # argparse errors
            rc = e.code
    return SimpleNamespace(returncode=rc, stderr=err.getvalue())


def test_stylize_rejects_style_options_for_a_single_style_model(tmp_path):
    model = save_model_file(TransformerNet(**TINY), tmp_path / "single.pth")
    photo = write_photo(tmp_path / "p.jpg", size=(24, 20))
    for option, message in [
        (["--style-index", "1"], "style index 1: a single-style model has style 0 only"),
        (
            ["--style-mix", "0.5,0.5"],
            "style mixing needs a multi-style model; this one has one style",
        ),
    ]:
        proc = _stylize("--model", model, "--input", photo, "--output", tmp_path / "o.jpg", *option)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [f"error: {model}: {message}"]
    proc = _stylize(
        "--model", model, "--input", photo, "--output", tmp_path / "o.jpg", "--style-mix", "0.5,x"
    )
    assert proc.returncode == 2 and "expected comma-separated numbers" in proc.stderr


def duo_overrides(tmp_path, photo_dir, style_file, *, steps: int) -> list[str]:
    """A tiny run of one network for two styles: style_file ("first") and a second photo."""
    second = write_photo(tmp_path / "second.png", size=(40, 56), seed=7)
    single = tiny_overrides(tmp_path, photo_dir, style_file, steps=steps)
    return [
        *(o for o in single if not o.startswith(("style=", "style.image="))),
        "style=multi",
        "style.name=duo",
        "style.names=[first,second]",
        f"+style.catalog.first.image={style_file}",
        f"+style.catalog.second.image={second}",
    ]


def test_multi_style_training_run_logs_per_style_and_stylize_uses_the_styles(
    tmp_path, photo_dir, style_file
):
    from train import train

    overrides = [*duo_overrides(tmp_path, photo_dir, style_file, steps=6), "optim.lr=1e-2"]
    result = train(make_cfg(overrides))
    out = tmp_path / "run"
    assert result["model_file"] == out / "duo.pth"
    raw = torch.load(result["model_file"], weights_only=True)
    assert raw["model_args"]["num_styles"] == 2
    assert raw["meta"]["styles"] == ["first", "second"] and raw["meta"]["style"] == "duo"
    assert raw["meta"]["style_images"] == [str(style_file), str(tmp_path / "second.png")]

    values, images = scalars(out)
    per_style = [
        f"{tag}/{name}"
        for tag in ("style_loss", "val/loss", "val/style_loss")
        for name in ("first", "second")
    ]
    for tag in [*per_style, "val/loss", "loss/total"]:
        assert tag in values, tag
    # Each step trains one style: 6 steps, 3 of each (every round of 2 visits both).
    assert len(values["style_loss/first"]) == 3 and len(values["style_loss/second"]) == 3
    for tag in ["samples/content|first", "samples/content|second", "style/first", "style/second"]:
        assert tag in images, tag
    preview = Image.open(out / "preview.jpg")
    assert preview.width == 3 * 32 + 2 * 4  # content | first | second

    photo = next(photo_dir.rglob("*.jpg"))
    outputs, stderr = {}, {}
    options = {
        "i0": [],
        "i1": ["--style-index", "1"],
        "m10": ["--style-mix", "1,0"],
        "mix": ["--style-mix", "0.5,0.5"],
    }
    model_and_photo = ["--model", result["model_file"], "--input", photo]
    for name, option in options.items():
        dst = tmp_path / f"{name}.png"
        proc = _stylize(*model_and_photo, "--output", dst, "--precision", "fp32", *option)
        assert proc.returncode == 0, proc.stderr
        outputs[name], stderr[name] = np.asarray(Image.open(dst), dtype=np.float32), proc.stderr
    assert "(2 styles: 0 first, 1 second; using 1 second)" in stderr["i1"]
    assert "using mix 0.5 first + 0.5 second" in stderr["mix"]
    # All styles start with the same gammas and betas: a difference is learned.
    assert np.abs(outputs["i0"] - outputs["i1"]).mean() > 0.1
    assert np.array_equal(outputs["i0"], outputs["m10"])
    assert not np.array_equal(outputs["mix"], outputs["i0"])
    proc = _stylize(*model_and_photo, "--output", tmp_path / "x.png", "--style-mix", "1,1,1")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {result['model_file']}: 3 style mixing weights for a model with 2 styles"
    ]
    # The Lightning checkpoint loads as a 2-style network too (names from its hparams).
    model, meta = load_model(out / "checkpoints" / "last.ckpt")
    assert model.num_styles == 2 and meta["styles"] == ["first", "second"]


def test_multi_style_config_composes():
    cfg = make_cfg(["style=multi"])
    assert list(cfg.style.names) == ["starry_night", "the_scream", "wave"]
    assert cfg.output_dir == "outputs/multi" and cfg.model_file == "outputs/multi/multi.pth"
    # Every single-style config is in the catalog, with its download address.
    assert cfg.style.catalog.wave.url.startswith("https://") and len(cfg.style.catalog) == 8
    cfg = make_cfg(
        [
            "style=multi",
            "style.names=[wave,monet]",
            "+style.catalog.monet.image=/x/monet.jpg",
            "style.catalog.wave.image=/x/wave.jpg",
        ]
    )
    from transformer_net.errors import ConfigError, TransformerNetError
    from transformer_net.preflight import prepare_inputs

    with pytest.raises(TransformerNetError, match="/x/wave.jpg: style image not found"):
        prepare_inputs(cfg)
    cfg = make_cfg(["style=multi", "style.names=[wave,nope]"])
    with pytest.raises(ConfigError, match="unknown style 'nope'; known: candy, "):
        prepare_inputs(cfg)
    with pytest.raises(ConfigError, match="style.names lists a style twice"):
        prepare_inputs(make_cfg(["style=multi", "style.names=[wave,wave]"]))


def test_bf16_network_and_autocast_take_mixes():
    """TorchStylizer casts the whole network to bf16; training runs under autocast."""
    net, x = multi_net(2), torch.rand(1, 3, 16, 16) * 255
    half = multi_net(2).to(torch.bfloat16)
    mixed = half(x.bfloat16(), torch.tensor([0.25, 0.75]))
    assert mixed.dtype == torch.bfloat16 and torch.isfinite(mixed).all()
    assert torch.equal(half(x.bfloat16(), torch.tensor([0.0, 1.0])), half(x.bfloat16(), 1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x, torch.tensor([0.25, 0.75]))
    torch.testing.assert_close(y.float(), net(x, torch.tensor([0.25, 0.75])), rtol=0.05, atol=3)


def test_per_style_losses_follow_log_every_n_steps(tmp_path, photo_dir, style_file):
    from train import train

    overrides = duo_overrides(tmp_path, photo_dir, style_file, steps=8)
    overrides = [o for o in overrides if not o.startswith("trainer.log_every_n_steps=")]
    overrides.append("trainer.log_every_n_steps=2")
    train(make_cfg(overrides))
    values, _ = scalars(tmp_path / "run")
    steps = sorted(s for name in ("first", "second") for s, _ in values[f"style_loss/{name}"])
    assert steps == [1, 3, 5, 7] == [s for s, _ in values["loss/total"]]
