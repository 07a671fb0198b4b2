"""Color preservation (luminance-only transfer) and style strength: values and CLI wiring."""

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import write_photo
from tests.test_stylize import run_stylize
from transformer_net import optimize, stylize_cli
from transformer_net.checkpoint import save_model_file
from transformer_net.color import (
    gray_image,
    luminance,
    match_luminance,
    postprocess,
    rgb_to_yiq,
    transfer_luminance,
    yiq_to_rgb,
)
from transformer_net.errors import ConfigError
from transformer_net.model import TransformerNet


def constant(rgb, size=(4, 5)) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.uint8)[:, None, None].expand(3, *size).contiguous()


def test_yiq_round_trip_and_luma():
    x = torch.randint(0, 256, (3, 7, 9), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(yiq_to_rgb(rgb_to_yiq(x)), x.float(), atol=1e-3, rtol=0)
    yiq = rgb_to_yiq(constant((255, 255, 255)))
    torch.testing.assert_close(yiq[:, 0, 0], torch.tensor([255.0, 0.0, 0.0]), atol=1e-3, rtol=0)


def test_gray_output_takes_the_content_colors():
    content, gray = constant((200, 100, 50)), constant((128, 128, 128))
    out = postprocess(content, gray, preserve_color=True)
    # Y(content) = 0.299*200 + 0.587*100 + 0.114*50 = 124.2; keeping I and Q while
    # setting Y to 128 adds 3.8 to every channel: (203.8, 103.8, 53.8) -> rounded.
    assert out.dtype == torch.uint8
    assert out[:, 0, 0].tolist() == [204, 104, 54]
    assert torch.equal(out, constant((204, 104, 54)))
    yiq_out, yiq_content = rgb_to_yiq(out), rgb_to_yiq(content)
    assert (yiq_out[0] - 128).abs().max() <= 0.5  # luminance of the stylized image
    assert (yiq_out[1:] - yiq_content[1:]).abs().max() <= 0.6  # chroma of the photo


def test_luminance_preserved_within_rounding_on_random_images():
    g = torch.Generator().manual_seed(1)
    content = (torch.rand(3, 16, 16, generator=g) * 100 + 80).to(torch.uint8)  # no clamping
    stylized = (torch.rand(3, 16, 16, generator=g) * 100 + 80).to(torch.uint8)
    out = postprocess(content, stylized, preserve_color=True)
    assert (rgb_to_yiq(out)[0] - rgb_to_yiq(stylized)[0]).abs().max() <= 0.5
    assert (rgb_to_yiq(out)[1:] - rgb_to_yiq(content)[1:]).abs().max() <= 0.6
    assert not torch.equal(out, stylized)


def test_strength_interpolates_pixels():
    content, stylized = constant((100, 0, 255)), constant((200, 40, 55))
    assert postprocess(content, stylized) is stylized  # default: untouched
    assert torch.equal(postprocess(content, stylized, strength=0.0), content)
    assert postprocess(content, stylized, strength=0.25)[:, 0, 0].tolist() == [125, 10, 205]


def test_strength_with_color_scales_only_the_luminance_change():
    content, gray = constant((200, 100, 50)), constant((128, 128, 128))
    out = postprocess(content, gray, strength=0.5, preserve_color=True)
    # Y goes halfway from 124.2 to 128 (+1.9 on every channel), chroma stays.
    assert out[:, 0, 0].tolist() == [202, 102, 52]
    expected = transfer_luminance(content, gray) * 0.5 + content.float() * 0.5
    assert torch.equal(out, expected.round().to(torch.uint8))


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_strength_out_of_range(bad):
    with pytest.raises(ConfigError, match="strength must be in"):
        postprocess(constant((1, 2, 3)), constant((1, 2, 3)), strength=bad)


@pytest.mark.parametrize(
    "value,message",
    [
        ("1.5", "must be between 0 and 1, got 1.5"),
        ("-0.1", "must be between 0 and 1, got -0.1"),
        ("nan", "must be between 0 and 1, got nan"),
        ("x", "expected a number such as 0.5, got 'x'"),
    ],
)
def test_cli_rejects_strength_out_of_range(tmp_path, capsys, value, message):
    src = write_photo(tmp_path / "in.png", size=(16, 12))
    argv = ["--model", "m.pth", "--input", src, "--output", tmp_path / "o.png"]
    err = run_stylize(capsys, *argv, "--strength", value, check_rc=2).stderr
    assert err == f"error: argument --strength: {message} (see stylize.py --help)\n"


def read(path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)


def test_cli_feedforward_applies_postprocess(tmp_path):
    torch.manual_seed(0)
    model = save_model_file(TransformerNet(channels=(4, 8, 8), num_residual=1), tmp_path / "m.pth")
    src = write_photo(tmp_path / "in.png", size=(21, 13))
    common = ["--model", str(model), "--input", str(src), "--precision", "fp32", "--quiet"]
    assert stylize_cli.main([*common, "--output", str(tmp_path / "plain.png")]) == 0
    argv = [*common, "--output", str(tmp_path / "pc.png"), "--preserve-color", "--strength", "0.7"]
    assert stylize_cli.main(argv) == 0
    expected = postprocess(
        read(src), read(tmp_path / "plain.png"), strength=0.7, preserve_color=True
    )
    assert torch.equal(read(tmp_path / "pc.png"), expected)


def test_cli_optimize_goes_through_postprocess(tmp_path, monkeypatch):
    # The optimization itself is tested in test_optimize.py; here a stand-in that
    # returns a gray image shows that --method optimize gets the same post-processing.
    class GrayOptimizer(optimize.GatysStylizer):
        def __init__(self, style_image, **options):
            self.device, self.options = torch.device("cpu"), options

        def __call__(self, image):
            return torch.full_like(image, 128)

    monkeypatch.setattr(optimize, "GatysStylizer", GrayOptimizer)
    src = tmp_path / "in.png"
    Image.fromarray(constant((200, 100, 50)).permute(1, 2, 0).numpy()).save(src)
    argv = [
        "--method",
        "optimize",
        "--style",
        str(src),
        "--input",
        str(src),
        "--quiet",
        "--output",
        str(tmp_path / "o.png"),
        "--preserve-color",
        "--strength",
        "0.5",
    ]
    assert stylize_cli.main(argv) == 0
    assert torch.equal(read(tmp_path / "o.png"), constant((202, 102, 52)))


def test_match_luminance_takes_the_target_mean_and_std():
    source = torch.tensor([[0.0, 10.0], [20.0, 30.0]])
    target = torch.tensor([[100.0, 100.0, 104.0, 104.0]])
    out = match_luminance(source, target)
    torch.testing.assert_close(out.mean(), target.mean())
    torch.testing.assert_close(out.std(), target.std())
    assert out.shape == source.shape and out[0, 0] < out[0, 1] < out[1, 0] < out[1, 1]


def test_optimize_with_preserve_color_is_luminance_only(tmp_path, monkeypatch):
    # Gatys et al. 2017: the optimization sees only luminance (gray content, gray
    # style matched to the photo's luminance statistics).
    from transformer_net import optimize

    seen = {}

    def fake_optimize_image(*, content, loss, **kwargs):
        seen["content"] = content
        seen["gram"] = loss.target_gram("relu1_2").clone()
        return content

    monkeypatch.setattr(optimize, "optimize_image", fake_optimize_image)
    style = write_photo(tmp_path / "style.png", size=(24, 24), seed=5)
    photo = write_photo(tmp_path / "in.png", size=(20, 16), seed=1)
    stylizer = optimize.GatysStylizer(style, vgg_weights="random", preserve_color=True)
    color_gram = stylizer.loss.target_gram("relu1_2").clone()
    image = read(photo)
    stylizer.timed(image)
    content = seen["content"]
    assert torch.equal(content[0], content[1]) and torch.equal(content[1], content[2])
    assert (content[0].float() - luminance(image)).abs().max() <= 0.5
    assert not torch.allclose(seen["gram"], color_gram)  # the style target was made gray
    gray_style = gray_image(match_luminance(luminance(read(style)), luminance(image)))
    stylizer.loss.set_style(gray_style)
    torch.testing.assert_close(seen["gram"], stylizer.loss.target_gram("relu1_2"))
