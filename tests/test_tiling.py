"""Tiled inference (tiling.py): the same picture as one whole pass, without seams."""

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, write_photo
from transformer_net.checkpoint import save_model_file
from transformer_net.image import load_image
from transformer_net.inference import Stylizer
from transformer_net.model import TransformerNet
from transformer_net.tiling import plan_tile_size, receptive_margin, stylize_tiled


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
    with pytest.raises(ValueError, match="multiple of 4"):
        stylize_tiled(random_net(), photo(40, 40), tile=30)


@pytest.fixture
def model_file(tmp_path):
    return save_model_file(random_net(), tmp_path / "net.pth")


def test_stylizer_falls_back_to_tiles_when_memory_runs_out(model_file, monkeypatch):
    stylizer = Stylizer(model_path=model_file, device="cpu", precision="fp32")
    image = photo(80, 64)
    expected = stylizer(image)
    calls = []

    net = stylizer.model

    def out_of_memory(x, style=None):  # the one-pass path; tiles call the model itself
        calls.append(tuple(x.shape))
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 80 GB")

    monkeypatch.setattr(stylizer, "_forward", out_of_memory)
    result = stylizer(image)
    assert calls == [(1, 3, 64, 80)]  # the whole image was tried once, then tiles
    assert (result.int() - expected.int()).abs().max() <= 1
    assert net is stylizer.model


def test_stylize_cli_tile_size_gives_the_same_image(tmp_path, model_file):
    src = write_photo(tmp_path / "in.png", size=(90, 70))
    outs = []
    for name, extra in [("whole.png", []), ("tiled.png", ["--tile-size", "32"])]:
        out = tmp_path / name
        proc = subprocess.run(
            [sys.executable, "stylize.py", "--model", str(model_file), "--input", str(src),
             "--output", str(out), "--precision", "fp32", *extra],
            cwd=REPO, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        outs.append(load_image(out))
    assert (outs[0].int() - outs[1].int()).abs().max() <= 1
    assert "tiles" in proc.stderr

    bad = subprocess.run(
        [sys.executable, "stylize.py", "--model", str(model_file), "--input", str(src),
         "--output", str(tmp_path / "x.png"), "--tile-size", "30"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: tile size")


def test_stylizer_tiles_when_the_estimate_exceeds_free_memory(model_file, monkeypatch):
    stylizer = Stylizer(model_path=model_file, device="cpu", precision="fp32")
    image = photo(300, 200)
    expected = stylizer(image)
    # 300 x 200 needs ~48 MB in fp32 by the estimate: pretend only 8 MB are free.
    monkeypatch.setattr("transformer_net.inference.memory_budget", lambda device: 8 << 20)
    seen = []
    stylizer.progress = lambda done, total: seen.append((done, total))
    result = stylizer(image)
    assert seen and seen[-1][0] == seen[-1][1] > 1
    assert (result.int() - expected.int()).abs().max() <= 1


def test_frame_batches_that_run_out_of_memory_are_split(model_file):
    stylizer = Stylizer(model_path=model_file, device="cpu", precision="fp32")
    one_pass = stylizer.batch
    sizes = []

    def small_memory(frames):  # more than 2 frames do not fit
        sizes.append(frames.shape[0])
        if frames.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return one_pass(frames)

    stylizer.batch = small_memory
    frames = torch.randint(0, 256, (5, 3, 24, 32), dtype=torch.uint8)
    out = stylizer.frames(frames)
    assert sizes == [5, 2, 3, 1, 2]  # 5 -> 2 + 3 -> 2 + (1 + 2)
    assert torch.equal(out, torch.cat([one_pass(f[None]) for f in frames]))
    stylizer.batch = lambda frames: (_ for _ in ()).throw(RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):  # other errors propagate
        stylizer.frames(frames)
