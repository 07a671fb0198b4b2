"""Tiled inference (tiling.py): the same picture as one whole pass, without seams."""

import tempfile
from pathlib import Path

import pytest
import torch

from tests.conftest import write_photo
from tests.test_stylize import run_stylize
from transformer_net.checkpoint import save_model_file
from transformer_net.errors import ConfigError, ImageError
from transformer_net.image import load_image
from transformer_net.inference import TorchStylizer
from transformer_net.model import TransformerNet
from transformer_net.tiling import (
    pad_like_model,
    plan_tile_size,
    receptive_margin,
    round_up,
    stylize_tiled,
)


def random_net(num_styles: int = 1, num_residual: int = 1) -> TransformerNet:
    """Small widths, non-trivial norm affine parameters (an untrained net has 1 and 0)."""
    torch.manual_seed(0)
    net = TransformerNet(channels=(4, 8, 8), num_residual=num_residual, num_styles=num_styles)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.split(".")[-2].startswith("in"):
                p.uniform_(0.5, 2.0) if name.endswith("weight") else p.uniform_(-2, 2)
        net.deconv3.conv2d.weight.mul_(40)  # outputs spanning 0-255, not flat gray
    return net.eval()


def whole(net: TransformerNet, image: torch.Tensor, style=None) -> torch.Tensor:
    with torch.inference_mode():
        return net(image[None].float(), style)[0].clamp(0, 255).round().to(torch.uint8)


def photo(w: int, h: int) -> torch.Tensor:
    """A (3, h, w) uint8 test photo (smooth gradients + noise)."""
    with tempfile.TemporaryDirectory() as d:
        return load_image(write_photo(Path(d) / "p.png", size=(w, h), seed=w + h))


@pytest.mark.parametrize("num_residual,tile", [(1, 24), (5, 48)])
def test_tiles_reproduce_the_whole_image(num_residual, tile):
    """Odd size (padding path), tiles smaller than the margin, both network depths."""
    net = random_net(num_residual=num_residual)
    image = photo(101, 75)
    expected = whole(net, image)
    tiled = stylize_tiled(net, image, tile=tile)
    assert tiled.shape == expected.shape == (3, 75, 101)
    # Equal up to float rounding: at most one level of 0-255 on a few pixels.
    diff = (tiled.int() - expected.int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3


def test_per_tile_statistics_would_show_seams():
    """The reason for the statistics passes: tiles normalized on their own differ."""
    net = random_net()
    image = photo(96, 64)
    expected = whole(net, image)
    tiles = [whole(net, image[:, :, x : x + 48]) for x in (0, 48)]
    naive = torch.cat(tiles, dim=2)
    assert (naive.int() - expected.int()).abs().float().mean() > 2
    assert (stylize_tiled(net, image, tile=48).int() - expected.int()).abs().max() <= 1


def test_tiles_with_a_multi_style_net():
    net = random_net(num_styles=2)
    image = photo(60, 44)
    mix = torch.tensor([0.3, 0.7])
    expected = whole(net, image, mix)
    tiled = stylize_tiled(net, image, tile=24, forward=lambda x: net(x, mix))
    assert (tiled.int() - expected.int()).abs().max() <= 1


def test_margin_and_tile_size_plan():
    assert receptive_margin(TransformerNet()) == 60  # 57 px rounded up to a multiple of 4
    assert receptive_margin(TransformerNet(num_residual=1)) == 28
    big = 10**12
    assert plan_tile_size(1000, 1000, dtype=torch.float32, budget=big, margin=64) == 0
    # 12000 x 9000 with 4 GB: tiles, multiples of 4, whose activations fit.
    tile = plan_tile_size(9000, 12000, dtype=torch.float32, budget=4 << 30, margin=64)
    assert tile % 4 == 0 and 64 <= tile <= 2048
    assert (tile + 128) ** 2 * 200 * 4 <= 4 << 30
    with pytest.raises(ConfigError, match="multiple of 4"):
        stylize_tiled(random_net(), photo(40, 40), tile=30)
    with pytest.raises(ImageError, match="image of 1x1 pixels is too small to tile"):
        pad_like_model(torch.zeros(3, 1, 1, dtype=torch.uint8))
    assert [round_up(x, 4) for x in (0, 1, 4, 5, 57)] == [0, 4, 4, 8, 60]


@pytest.fixture
def model_file(tmp_path):
    return save_model_file(random_net(), tmp_path / "net.pth")


def test_stylizer_falls_back_to_tiles_when_memory_runs_out(model_file, monkeypatch):
    stylizer = TorchStylizer(model_path=model_file, device="cpu", precision="fp32")
    image = photo(80, 64)
    expected = stylizer(image)
    calls = []

    def out_of_memory(x, style=None):  # the one-pass path; tiles call the model itself
        calls.append(tuple(x.shape))
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 80 GB")

    monkeypatch.setattr(stylizer, "_forward", out_of_memory)
    result = stylizer(image)
    assert calls == [(1, 3, 64, 80)]  # the whole image was tried once, then tiles
    assert (result.int() - expected.int()).abs().max() <= 1


def test_stylize_cli_tile_size_gives_the_same_image(tmp_path, model_file, capsys):
    src = write_photo(tmp_path / "in.png", size=(90, 70))
    common = ["--model", model_file, "--input", src, "--precision", "fp32"]
    outs = []
    for name, extra in [("whole.png", []), ("tiled.png", ["--tile-size", "32"])]:
        proc = run_stylize(capsys, *common, "--output", tmp_path / name, *extra, check_rc=0)
        outs.append(load_image(tmp_path / name))
    assert (outs[0].int() - outs[1].int()).abs().max() <= 1
    assert "tiles: 100%" in proc.stderr and "72/72" in proc.stderr  # 3 x 3 tiles, 8 passes
    quiet = [*common, "--output", tmp_path / "q.png", "--tile-size", "32", "--quiet"]
    proc = run_stylize(capsys, *quiet, check_rc=0)
    assert proc.stderr == "" and load_image(tmp_path / "q.png").equal(outs[1])

    proc = run_stylize(capsys, *common, "--output", tmp_path / "x.png", "--tile-size", "30")
    assert proc.returncode == 2
    assert proc.stderr.startswith(
        "error: argument --tile-size: tile size must be a multiple of 4 and >= 8, got 30"
    )
    assert not (tmp_path / "x.png").exists()


def test_stylizer_tiles_when_the_estimate_exceeds_free_memory(model_file, monkeypatch):
    seen = []
    stylizer = TorchStylizer(
        model_path=model_file,
        device="cpu",
        precision="fp32",
        progress=lambda done, total: seen.append((done, total)),
    )
    image = photo(300, 200)
    expected = stylizer(image)
    assert seen == []  # it fits: one pass
    # 300 x 200 needs ~48 MB in fp32 by the estimate: pretend only 8 MB are free.
    monkeypatch.setattr("transformer_net.inference.memory_budget", lambda device: 8 << 20)
    result = stylizer(image)
    assert seen and seen[-1][0] == seen[-1][1] > 1
    assert (result.int() - expected.int()).abs().max() <= 1


def test_frame_batches_that_run_out_of_memory_are_split(model_file, monkeypatch):
    stylizer = TorchStylizer(model_path=model_file, device="cpu", precision="fp32")
    frames = torch.randint(0, 256, (5, 3, 24, 32), dtype=torch.uint8)
    expected = torch.cat([stylizer.batch(f[None]) for f in frames])
    network = stylizer.model
    sizes = []

    def small_memory(x, style=None):  # more than 2 frames do not fit
        sizes.append(x.shape[0])
        if x.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return network(x, style)

    monkeypatch.setattr(stylizer, "_forward", small_memory)
    out = stylizer.batch(frames)
    assert sizes == [5, 2, 3, 1, 2]  # 5 -> 2 + 3 -> 2 + (1 + 2)
    assert torch.equal(out, expected)

    def shape_mismatch(x, style=None):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(stylizer, "_forward", shape_mismatch)
    with pytest.raises(RuntimeError, match="shape mismatch"):  # other errors propagate
        stylizer.batch(frames)
