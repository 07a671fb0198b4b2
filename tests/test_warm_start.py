"""init_from=: a run's transformer starts from a trained network (transformer_net/warm_start.py)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from tests.conftest import REPO, SHARED, require, write_tiny_inputs
from tests.test_sharing import COMMIT, lay_out_cache
from tests.test_train import make_cfg, scalars, tiny_overrides, train_cli
from train import train
from transformer_net.checkpoint import read_model_file, save_model_file
from transformer_net.errors import ConfigError, ModelFileError
from transformer_net.image import load_image
from transformer_net.model import TransformerNet
from transformer_net.quantize import output_psnr
from transformer_net.warm_start import PHOTO, photo_starts, read_warm_start

SMALL = {"channels": [8, 16, 16], "num_residual": 1}


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A finished tiny run (model file, folder, checkpoints): the source of warm starts."""
    tmp = tmp_path_factory.mktemp("source")
    photos, style = write_tiny_inputs(tmp)
    result = train(make_cfg(tiny_overrides(tmp, photos, style, steps=6)))
    return {"tmp": tmp, "photos": photos, "style": style, **result}


def _equal(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k].float(), b[k].float()) for k in a)


def test_every_source_kind_gives_the_trained_weights(source_run, tmp_path, monkeypatch):
    _, trained, _ = read_model_file(source_run["model_file"])
    ckpt = source_run["output_dir"] / "checkpoints" / "last.ckpt"
    sources = [source_run["model_file"], source_run["model_folder"], ckpt]
    for source in sources:
        warm = read_warm_start(str(source), model_args=SMALL, num_styles=1)
        assert _equal(warm.weights, trained), source
        assert warm.description.startswith(str(source)) and "step 6" in warm.description
    # hf://: from the Hugging Face cache (downloading is tested in test_sharing.py)
    constants = pytest.importorskip("huggingface_hub.constants")
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lay_out_cache(cache, "alice/warm", source_run["model_folder"])
    warm = read_warm_start(f"hf://alice/warm@{COMMIT}", model_args=SMALL, num_styles=1)
    assert _equal(warm.weights, trained)


def test_the_first_validation_loss_is_the_sources(source_run, capsys):
    """The run's weights really start from the source: its validation loss before the
    first step equals the source run's after its last step, on the same photos."""
    tmp = source_run["tmp"]
    overrides = tiny_overrides(tmp / "warm", source_run["photos"], source_run["style"], steps=3)
    result = train(make_cfg([*overrides, f"init_from={source_run['model_file']}"]))
    source_val = dict(scalars(source_run["output_dir"])[0]["val/loss"])
    warm_val = dict(scalars(result["output_dir"])[0]["val/loss"])
    assert warm_val[0] == pytest.approx(source_val[6], rel=1e-5)
    # a fresh start: step count, optimizer and schedule (this is not a resume)
    assert result["steps"] == 3
    ckpt = torch.load(result["checkpoint"], weights_only=True)
    assert ckpt["optimizer_states"][0]["state"][0]["step"] == 3
    # the model file and the card record where the run started
    _, _, meta = read_model_file(result["model_file"])
    assert meta["init_from"] == f"{source_run['model_file']} (step 6)"
    card = (result["model_folder"] / "README.md").read_text()
    assert f"started from: {source_run['model_file']} (step 6)" in card
    _, _, scratch_meta = read_model_file(source_run["model_file"])
    assert scratch_meta["init_from"] is None


def test_a_mismatched_preset_is_one_line_before_any_download(source_run, tmp_path, capsys):
    # model=slim against an 8/16/16 network; the photos and painting would be downloaded
    # (download_sample, a style URL), so an error about them means the order is wrong
    args = [
        "model=slim",
        f"init_from={source_run['model_file']}",
        f"data.root={tmp_path / 'nothing'}",
        "data.download_sample=48",
        "style=wave",
        "loss.vgg_weights=caffe",
        f"output_dir={tmp_path / 'run'}",
    ]
    code, out, err = train_cli(args, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err == (
        f"error: init_from={source_run['model_file']}: the source is channels [8, 16, 16], "
        "1 residual blocks but this run trains model=slim, channels [16, 32, 64], 3 residual "
        "blocks; pick the model preset of the source (model=...) or another source\n"
    )
    assert not (tmp_path / "nothing").exists() and not (tmp_path / "run").exists()


def test_a_missing_or_broken_source_is_one_line(tmp_path, capsys):
    code, _, err = train_cli(
        [f"init_from={tmp_path / 'none.pth'}", f"output_dir={tmp_path / 'run'}"], capsys
    )
    assert code == 2 and err == f"error: init_from={tmp_path / 'none.pth'}: " + (
        f"{tmp_path / 'none.pth'}: model file not found\n"
    )
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match=r"^init_from=.*bad.pth: .*corrupt"):
        read_warm_start(str(bad), model_args=SMALL, num_styles=1)


def _multi(names: list[str]) -> tuple[TransformerNet, list[str]]:
    torch.manual_seed(0)
    net = TransformerNet(**SMALL, num_styles=len(names))
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.split(".")[-2].startswith("in"):
                p.copy_(torch.randn_like(p))  # every style's norms differ
    return net, names


def test_multi_style_sources_and_targets(tmp_path):
    net, names = _multi(["a", "b", "c"])
    multi = save_model_file(net, tmp_path / "multi.pth", meta={"styles": names})
    # one style of a multi-style network starts a single-style run
    warm = read_warm_start(str(multi), model_args=SMALL, num_styles=1, style="b")
    assert torch.equal(warm.weights["in1.weight"], net.in1.weight[1])
    assert torch.equal(warm.weights["conv1.conv2d.weight"], net.conv1.conv2d.weight)
    assert "style b" in warm.description
    first = read_warm_start(str(multi), model_args=SMALL, num_styles=1)
    assert torch.equal(first.weights["res1.in2.bias"], net.res1.in2.bias[0])
    # the same number of styles: all of them
    same = read_warm_start(str(multi), model_args=SMALL, num_styles=3)
    assert torch.equal(same.weights["in1.weight"], net.in1.weight)
    # a single-style source: every style of the new network starts from it
    single_net = TransformerNet(**SMALL)
    single = save_model_file(single_net, tmp_path / "single.pth", meta={"style": "x"})
    warm = read_warm_start(str(single), model_args=SMALL, num_styles=2)
    target = TransformerNet(**SMALL, num_styles=2)
    warm.apply(target)
    assert torch.equal(target.in3.bias[0], single_net.in3.bias)
    assert torch.equal(target.in3.bias[1], single_net.in3.bias)
    with pytest.raises(
        ConfigError, match=r"init_from_style=d: .* has no such style \(it has a, b, c\)"
    ):
        read_warm_start(str(multi), model_args=SMALL, num_styles=1, style="d")


PRESETS = sorted((REPO / "configs" / "model").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_preset_has_a_photo_start_that_reproduces_photos(preset):
    """init_from=photo: the shipped start of each preset paints the photo back (PSNR
    well above a random network's), within a few MB."""
    args = yaml.safe_load(preset.read_text())
    warm = read_warm_start(PHOTO, model_args=args, num_styles=1, preset=preset.stem)
    folder = next(p for p, a in photo_starts().items() if a["channels"] == args["channels"]
                  and a["num_residual"] == args["num_residual"])  # fmt: skip
    assert sum(f.stat().st_size for f in folder.iterdir()) < 4_000_000
    assert (
        json.loads((folder / "config.json").read_text())["model_args"]["channels"]
        == args["channels"]
    )
    photo = load_image(require(SHARED / "images" / "content" / "chicago.jpg"), max_side=128)

    def psnr(net: TransformerNet) -> float:
        with torch.no_grad():
            return output_psnr(net.eval()(photo.float()[None])[0], photo)

    torch.manual_seed(0)
    net = TransformerNet(**args)
    random_psnr = psnr(net)
    warm.apply(net)
    # about 16 dB against a random network's 9: the photo's structure, its colours shifted
    assert psnr(net) > 13 and psnr(net) > random_psnr + 4


def test_photo_for_an_architecture_without_a_start_names_the_shipped_ones():
    with pytest.raises(
        ConfigError, match=r"^init_from=photo: no photo start for channels \[8, 16, 16\]"
    ):
        read_warm_start(PHOTO, model_args=SMALL, num_styles=1)
