"""Sharing models: safetensors files, model folders and their cards, hf:// and publishing.

The Hugging Face Hub cannot be reached from here: hf:// loading runs huggingface_hub's
real code against a cache laid out the way the library lays it out (blobs, snapshots
of symlinks, refs), in offline mode; publishing runs against a fake ``HfApi`` that
records its calls and lists what ``upload_folder`` would send, with the library's own
file filter.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import script_main, write_photo
from tests.fake_hub import FakeHub
from tests.test_stylize import run_stylize
from transformer_net import safetensors_file
from transformer_net.checkpoint import load_model, read_model_file, save_model_file
from transformer_net.errors import ConfigError, ModelFileError
from transformer_net.image import load_image, style_thumbnail
from transformer_net.model import TransformerNet
from transformer_net.model_folder import read_model_folder, save_model_folder
from transformer_net.runners import onnx_cache_path

LOSS = {"vgg_weights": "caffe", "preprocessing": "caffe", "style_weight": 1.0}
COMMIT = "0123456789abcdef0123456789abcdef01234567"  # a commit hash, as the Hub gives them


def tiny_net(seed: int = 0, **kwargs) -> TransformerNet:
    torch.manual_seed(seed)
    net = TransformerNet(channels=(4, 8, 8), num_residual=1, **kwargs)
    with torch.no_grad():  # non-trivial norms: a swapped tensor would show in the output
        for name, p in net.named_parameters():
            if name.startswith("in"):
                p.add_(torch.randn_like(p) * 0.1)
    return net.eval()


@pytest.fixture
def model_file(tmp_path, style_file) -> Path:
    """A model file as training writes one (the quick start's kind), with its metadata."""
    meta = {
        "style": "custom",
        "styles": ["custom"],
        "style_image": str(style_file),
        "global_step": 300,
        "image_size": 128,
        "loss": LOSS,
        "metrics": {"loss/total": 1.5, "val/loss": 2.25},
        "style_thumbnails": [style_thumbnail(load_image(style_file))],
    }
    return save_model_file(tiny_net(), tmp_path / "custom.pth", meta=meta)


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    header, _, _ = card[4:].partition("\n---\n")
    return yaml.safe_load(header)


# --- safetensors ----------------------------------------------------------------------

ODD_TENSORS = {
    "w": torch.randn(3, 2, 5),
    "half": torch.randn(4).half(),
    "bf": torch.randn(2, 2).bfloat16(),
    "steps": torch.tensor([1, -2, 3], dtype=torch.int64),
    "mask": torch.tensor([True, False, True]),
    "scalar": torch.tensor(2.5),
    "empty": torch.zeros(0, 3),
    "bytes": torch.arange(7, dtype=torch.uint8),
}


def test_our_safetensors_files_load_in_the_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    path = safetensors_file.save_file(ODD_TENSORS, tmp_path / "ours.safetensors", {"a": "b"})
    theirs = st.load_file(str(path))
    assert theirs.keys() == ODD_TENSORS.keys()
    for key, value in ODD_TENSORS.items():
        assert theirs[key].dtype == value.dtype and torch.equal(theirs[key], value), key
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"a": "b"}


def test_files_of_the_safetensors_package_load_here(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    path = tmp_path / "theirs.safetensors"
    st.save_file(ODD_TENSORS, str(path), metadata={"format": "pt"})
    tensors, metadata = safetensors_file.load_file(path)
    assert metadata == {"format": "pt"}
    assert tensors.keys() == ODD_TENSORS.keys()
    for key, value in ODD_TENSORS.items():
        assert tensors[key].dtype == value.dtype and torch.equal(tensors[key], value), key
    assert path.read_bytes() == safetensors_file.encode(ODD_TENSORS, {"format": "pt"})


def _with_header(header: dict, data: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


MALFORMED = {
    "truncated": safetensors_file.encode({"w": torch.ones(4)})[:-3],
    "short": b"\x01\x02",
    "huge header": struct.pack("<Q", 1 << 40) + b"{}",
    "not json": struct.pack("<Q", 4) + b"{abc",
    "a list": _with_header([1, 2]),  # type: ignore[arg-type]
    "bad dtype": _with_header(
        {"w": {"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}}, b"0000"
    ),
    "wrong size": _with_header(
        {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"0000"
    ),
    "overlap": _with_header(
        {
            "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
            "b": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]},
        },
        b"000000",
    ),
    "negative shape": _with_header({"w": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 0]}}),
    "bad metadata": _with_header({"__metadata__": {"a": 1}}),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_safetensors_are_refused_with_one_line(tmp_path, case):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(MALFORMED[case])
    with pytest.raises(ModelFileError) as info:
        safetensors_file.load_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a valid safetensors file (") and "\n" not in message


def test_a_model_folder_with_a_malformed_weights_file_fails_in_one_line(
    tmp_path, model_file, capsys
):
    folder = save_model_folder(model_file, tmp_path / "model")
    (folder / "model.safetensors").write_bytes(MALFORMED["truncated"])
    photo = write_photo(tmp_path / "photo.png")
    r = run_stylize(capsys, "--model", folder, "--input", photo, "--output", tmp_path / "o.png")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (
        f"error: {folder / 'model.safetensors'}: not a valid safetensors file (the tensors take "
        f"16 bytes but the file holds 13 after its header (truncated or padded))"
    )


# --- model folders --------------------------------------------------------------------


def test_a_model_file_becomes_a_folder_with_the_same_tensors_and_output(tmp_path, model_file):
    folder = save_model_folder(model_file, tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "style.jpg",
    ]
    args, sd, meta = read_model_file(model_file)
    args2, sd2, meta2 = read_model_folder(folder)
    assert args2 == args and sd2.keys() == sd.keys()
    for key in sd:
        assert sd2[key].dtype == sd[key].dtype and torch.equal(sd2[key], sd[key]), key
    for key in ("style", "styles", "global_step", "image_size", "loss", "metrics"):
        assert meta2[key] == meta[key], key
    # the painting's thumbnail travels in the folder as the same JPEG bytes
    assert torch.equal(meta2["style_thumbnails"][0], meta["style_thumbnails"][0])
    x = torch.rand(1, 3, 21, 34, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        assert torch.equal(load_model(folder)[0](x), load_model(model_file)[0](x))
    config = json.loads((folder / "config.json").read_text())
    assert config["model_args"] == {"channels": [4, 8, 8], "num_residual": 1}
    assert config["vgg"]["preprocessing"] == "caffe" and config["training"]["steps"] == 300
    assert config["files"] == sorted(p.name for p in folder.iterdir())
    assert set(config["versions"]) == {"transformer_net", "torch"}
    # and back: a folder made from the folder holds the same bytes of weights
    again = save_model_folder(folder, tmp_path / "again")
    assert (again / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()


def test_a_multi_style_checkpoint_becomes_a_folder(tmp_path):
    net = tiny_net(num_styles=3)
    ckpt = {
        "state_dict": {f"transformer.{k}": v for k, v in net.state_dict().items()},
        "global_step": 12,
        "hyper_parameters": {"style_names": ["a", "b", "c"], "loss": LOSS},
    }
    torch.save(ckpt, tmp_path / "last.ckpt")
    folder = save_model_folder(tmp_path / "last.ckpt", tmp_path / "model")
    args, sd, meta = read_model_folder(folder)
    assert args["num_styles"] == 3 and meta["styles"] == ["a", "b", "c"]
    x = torch.rand(1, 3, 16, 16) * 255
    with torch.no_grad():
        assert torch.equal(load_model(folder)[0](x, 2), net(x, 2))
    card = (folder / "README.md").read_text()
    assert "No style image was recorded" in card  # no thumbnails, no style image files
    assert "`--style-index N` picks the style: 0 a, 1 b, 2 c." in card


def test_the_model_card_front_matter_parses_as_yaml_with_the_hub_keys(tmp_path, model_file):
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    (evaluation / "evaluation.md").write_text(
        "## Mean over images\n\n| method | total |\n| --- | ---: |\n| feed-forward | 1.2e+05 |\n"
    )
    folder = save_model_folder(
        model_file,
        tmp_path / "model",
        license="apache-2.0",
        sample_sheet=write_photo(tmp_path / "sheet.png", size=(80, 30)),
        evaluation=evaluation,
        training={"command": "python train.py experiment=quickstart", "batch_size": 2},
    )
    card = (folder / "README.md").read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "transformer-net"
    assert meta["pipeline_tag"] == "image-to-image"
    assert meta["license"] == "apache-2.0"
    assert {"style-transfer", "image-to-image"} <= set(meta["tags"])
    body = card.split("\n---\n", 1)[1]
    assert "![style image: custom](style.jpg)" in body
    assert "![photos and their stylized versions](samples.jpg)" in body
    assert "python train.py experiment=quickstart" in body
    assert "| `val/loss` | 2.25 |" in body  # the final losses
    assert "### Mean over images" in body and "| feed-forward | 1.2e+05 |" in body
    assert "rights are their owners'" in body
    assert json.loads((folder / "config.json").read_text())["training"]["images"] == 600
    assert load_image(folder / "samples.jpg").shape == (3, 30, 80)  # a PNG, made a JPEG


def test_without_a_style_image_the_card_says_so(tmp_path):
    path = save_model_file(tiny_net(), tmp_path / "m.pth", meta={"style_image": "/gone.jpg"})
    folder = save_model_folder(path, tmp_path / "model")
    assert not (folder / "style.jpg").exists()
    assert "No style image was recorded with this model." in (folder / "README.md").read_text()


def test_a_folder_replaces_only_a_model_folder(tmp_path, model_file):
    other = tmp_path / "photos"
    write_photo(other / "a.png")
    with pytest.raises(ConfigError, match="not a transformer-net model folder; refusing"):
        save_model_folder(model_file, other)
    assert sorted(p.name for p in other.iterdir()) == ["a.png"]
    folder = save_model_folder(model_file, tmp_path / "model")
    with pytest.raises(ConfigError, match="a model folder already"):
        save_model_folder(model_file, folder)
    save_model_folder(model_file, folder, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "custom.pth",
        "model",
        "photos",
        "style.png",
    ]


def test_an_interrupted_write_leaves_no_folder(tmp_path, model_file, monkeypatch):
    from transformer_net import model_folder

    written = []

    def failing(path, data):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(path)
        return Path(path).write_bytes(data)

    monkeypatch.setattr(model_folder, "atomic_write_bytes", failing)
    with pytest.raises(KeyboardInterrupt):
        save_model_folder(model_file, tmp_path / "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["custom.pth", "style.png"]


def test_a_folder_that_is_not_a_model_folder_is_named_with_what_it_lacks(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    photo = write_photo(tmp_path / "photo.png")
    r = run_stylize(capsys, "--model", tmp_path / "m", "--input", photo, "--output", "o.png")
    assert r.returncode == 2
    assert r.stderr.startswith(f"error: {tmp_path / 'm'}: a folder without model.safetensors: ")
    assert r.stderr.count("\n") == 1


def test_stylize_gives_the_same_image_from_the_folder_and_the_pth(tmp_path, model_file, capsys):
    folder = save_model_folder(model_file, tmp_path / "model")
    photo = write_photo(tmp_path / "photo.png", size=(37, 29))
    outputs = {}
    for runtime in ("torch", "auto"):  # auto on a CPU: the cached ONNX export, if installed
        for name, model in (("pth", model_file), ("folder", folder)):
            out = tmp_path / f"{name}-{runtime}.png"
            run_stylize(
                capsys, "--model", model, "--input", photo, "--output", out,
                "--runtime", runtime, "--quiet", check_rc=0,
            )  # fmt: skip
            outputs[name, runtime] = load_image(out)
        assert torch.equal(outputs["pth", runtime], outputs["folder", runtime]), runtime


def test_the_onnx_cache_of_a_folder_is_keyed_by_its_config_and_weights(tmp_path, model_file):
    folder = save_model_folder(model_file, tmp_path / "model")
    key = onnx_cache_path(folder)
    (folder / "README.md").write_text("edited card")
    assert onnx_cache_path(folder) == key
    other = save_model_folder(
        save_model_file(tiny_net(seed=1), tmp_path / "b.pth"), tmp_path / "other"
    )
    assert onnx_cache_path(other) != key


def test_export_model_writes_a_folder_and_checks_it(tmp_path, model_file, capsys):
    photos = tmp_path / "photos"
    for i in range(2):
        write_photo(photos / f"{i}.jpg", size=(36, 28), seed=i)
    out = tmp_path / "shared"
    rc = script_main("export_model")(
        [str(model_file), str(out), "--format", "folder", "--samples", str(photos)]
    )
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "max abs difference 0.00e+00" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "samples.jpg",
        "style.jpg",
    ]
    sheet = load_image(out / "samples.jpg")  # 2 rows: photo | stylized, labelled
    assert sheet.shape[2] > sheet.shape[1] > 2 * 18
    rc = script_main("export_model")(
        [str(model_file), str(tmp_path / "x.onnx"), "--license", "mit"]
    )
    assert rc == 2 and "--license: for --format folder only" in capsys.readouterr().err


# --- the Hub ----------------------------------------------------------------------------


def lay_out_cache(cache: Path, repo_id: str, folder: Path, commit: str = COMMIT) -> Path:
    """``folder``'s files in a huggingface_hub cache, as ``snapshot_download`` leaves them:
    content-addressed blobs, a snapshot of relative symlinks per commit, refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for file in sorted(folder.iterdir()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(Path("../..") / "blobs" / blob.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    # huggingface_hub reads HF_HUB_CACHE when imported; this process imported it already
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_hf_paths_load_from_the_cache_offline(tmp_path, model_file, hub_cache, capsys):
    folder = save_model_folder(model_file, tmp_path / "model")
    snapshot = lay_out_cache(hub_cache, "alice/tiny-style", folder)
    _, sd, _ = read_model_file(model_file)
    for path in ("hf://alice/tiny-style", f"hf://alice/tiny-style@{COMMIT}"):
        _, sd2, meta = read_model_file(path)
        assert all(torch.equal(sd[k], sd2[k]) for k in sd) and meta["style"] == "custom"
    photo = write_photo(tmp_path / "photo.png", size=(30, 20))
    r = run_stylize(
        capsys, "--model", "hf://alice/tiny-style", "--input", photo, "--output",
        tmp_path / "hub.png", "--runtime", "torch", check_rc=0,
    )  # fmt: skip
    assert r.stderr.startswith("model hf://alice/tiny-style (pytorch)")
    run_stylize(
        capsys, "--model", snapshot, "--input", photo, "--output", tmp_path / "local.png",
        "--runtime", "torch", check_rc=0,
    )  # fmt: skip
    assert torch.equal(load_image(tmp_path / "hub.png"), load_image(tmp_path / "local.png"))


def test_an_uncached_hf_path_offline_fails_in_one_line(tmp_path, hub_cache, capsys):
    photo = write_photo(tmp_path / "photo.png")
    r = run_stylize(capsys, "--model", "hf://alice/nothing", "--input", photo, "--output", "o.png")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr == (
        f"error: hf://alice/nothing: not in the Hugging Face cache ({hub_cache}) and "
        "HF_HUB_OFFLINE=1 forbids downloading it; run once online (or unset HF_HUB_OFFLINE)\n"
    )
    r = run_stylize(capsys, "--model", "hf://alice/x@", "--input", photo, "--output", "o.png")
    assert r.returncode == 2 and "not a Hub model path" in r.stderr


@pytest.fixture
def hub_server(tmp_path, model_file, monkeypatch):
    """A model folder served over HTTP by a Hub stand-in, huggingface_hub pointed at it,
    online, with an empty cache of this test's own."""
    constants = pytest.importorskip("huggingface_hub.constants")
    folder = save_model_folder(model_file, tmp_path / "model")
    with FakeHub("alice/tiny-style", folder, COMMIT) as hub:
        # huggingface_hub reads HF_ENDPOINT and HF_HUB_CACHE when imported: set what it read
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        template = hub.url + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield hub, folder


def test_hf_paths_download_over_http_then_work_offline(tmp_path, hub_server, monkeypatch, capsys):
    hub, folder = hub_server
    photo = write_photo(tmp_path / "photo.png", size=(30, 20))
    out = {}
    for name, model in (("local", folder), ("hub", "hf://alice/tiny-style"), ("tag", None)):
        if name == "tag":  # downloaded once: offline, from the cache, by commit
            monkeypatch.setenv("HF_HUB_OFFLINE", "1")
            model = f"hf://alice/tiny-style@{COMMIT}"
        out[name] = tmp_path / f"{name}.png"
        run_stylize(
            capsys, "--model", model, "--input", photo, "--output", out[name], "--runtime",
            "torch", check_rc=0,
        )  # fmt: skip
    assert torch.equal(load_image(out["local"]), load_image(out["hub"]))
    assert torch.equal(load_image(out["local"]), load_image(out["tag"]))
    downloaded = {r.rsplit("/", 1)[-1] for r in hub.requests if r.startswith("GET /alice/")}
    assert downloaded == {p.name for p in folder.iterdir()}  # every file, over HTTP
    assert len([r for r in hub.requests if r.startswith("GET /alice/")]) == len(downloaded)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            "hf://alice/tiny-style@v9",
            "hf://alice/tiny-style@v9: the repository has no revision 'v9'",
        ),
        ("hf://bob/nothing", "hf://bob/nothing: no such model repository on the Hub"),
    ],
)
def test_a_missing_hub_repository_or_revision_is_one_line(
    tmp_path, hub_server, capsys, model, message
):
    photo = write_photo(tmp_path / "photo.png")
    r = run_stylize(capsys, "--model", model, "--input", photo, "--output", tmp_path / "o.png")
    assert r.returncode == 2 and r.stderr.startswith(f"error: {message}")
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_an_unreachable_hub_uses_the_cache_or_says_so(tmp_path, hub_server, capsys):
    hub, folder = hub_server
    photo = write_photo(tmp_path / "photo.png")
    args = ["--input", photo, "--output", tmp_path / "a.png", "--runtime", "torch"]
    run_stylize(capsys, "--model", "hf://alice/tiny-style", *args, check_rc=0)
    hub.stop()  # the Hub goes away: what was downloaded still loads
    args[3] = tmp_path / "b.png"
    run_stylize(capsys, "--model", "hf://alice/tiny-style", *args, check_rc=0)
    args[3] = tmp_path / "c.png"
    r = run_stylize(capsys, "--model", "hf://alice/other", *args)
    assert (
        r.returncode != 0
        and "hf://alice/other: cannot download from the Hub and not in " in r.stderr
    )


def test_without_the_hub_extra_both_commands_say_how_to_install_it(
    tmp_path, model_file, monkeypatch, capsys
):
    monkeypatch.setitem(__import__("sys").modules, "huggingface_hub", None)  # not installed
    with pytest.raises(ModelFileError) as info:
        read_model_file("hf://alice/tiny-style")
    assert str(info.value) == (
        "hf://alice/tiny-style: loading a model from the Hugging Face Hub needs "
        'huggingface_hub: pip install "transformer-net[hub]"'
    )
    folder = save_model_folder(model_file, tmp_path / "model")
    rc = script_main("publish_model")([str(folder), "--repo", "alice/tiny-style"])
    assert rc == 2
    assert capsys.readouterr().err == (
        'error: publish_model.py needs huggingface_hub: pip install "transformer-net[hub]"\n'
    )


class FakeHfApi:
    """Records the calls publish_model.py makes, and what upload_folder would upload."""

    calls: list = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, *, repo_id, folder_path, allow_patterns, **kwargs):
        from huggingface_hub.utils import filter_repo_objects

        # the library's own filter over the folder's files, as upload_folder applies it
        files = sorted(p.name for p in Path(folder_path).rglob("*") if p.is_file())
        uploaded = sorted(filter_repo_objects(files, allow_patterns=allow_patterns))
        self.calls.append(("upload_folder", repo_id, uploaded, kwargs))


def test_publishing_uploads_exactly_the_files_of_the_folder(
    tmp_path, model_file, monkeypatch, capsys
):
    hub = pytest.importorskip("huggingface_hub")
    FakeHfApi.calls = []
    monkeypatch.setattr(hub, "HfApi", FakeHfApi)
    folder = save_model_folder(
        model_file, tmp_path / "model", sample_sheet=write_photo(tmp_path / "sheet.png")
    )
    (folder / "notes.txt").write_text("not part of the model")  # left out of the upload
    rc = script_main("publish_model")(
        [str(folder), "--repo", "alice/tiny-style", "--private", "--revision", "v2"]
    )
    out = capsys.readouterr().out
    assert rc == 0
    files = ["README.md", "config.json", "model.safetensors", "samples.jpg", "style.jpg"]
    assert FakeHfApi.calls[0] == (
        "create_repo",
        "alice/tiny-style",
        {"private": True, "exist_ok": True},
    )
    assert FakeHfApi.calls[1] == (
        "create_branch",
        "alice/tiny-style",
        {"branch": "v2", "exist_ok": True},
    )
    name, repo, uploaded, kwargs = FakeHfApi.calls[2]
    assert (name, repo, uploaded, kwargs["revision"]) == (
        "upload_folder",
        "alice/tiny-style",
        files,
        "v2",
    )
    assert "to https://huggingface.co/alice/tiny-style" in out
    assert "python stylize.py --model hf://alice/tiny-style" in out


def test_publishing_refuses_an_incomplete_folder(tmp_path, model_file, monkeypatch, capsys):
    hub = pytest.importorskip("huggingface_hub")
    FakeHfApi.calls = []
    monkeypatch.setattr(hub, "HfApi", FakeHfApi)
    folder = save_model_folder(model_file, tmp_path / "model")
    (folder / "style.jpg").unlink()
    rc = script_main("publish_model")([str(folder), "--repo", "alice/tiny-style"])
    err = capsys.readouterr().err
    assert rc == 2 and FakeHfApi.calls == []
    assert err.startswith(f"error: {folder}: not a complete model folder: style.jpg missing")
    assert err.count("\n") == 1


# --- training ---------------------------------------------------------------------------


def test_training_writes_the_model_folder(tmp_path, photo_dir, style_file, capsys):
    from tests.test_console import TINY_NET
    from tests.test_train import tiny_overrides, train_cli

    overrides = [*tiny_overrides(tmp_path, photo_dir, style_file, steps=2), *TINY_NET]
    rc, out, err = train_cli(overrides, capsys)
    assert rc == 0, err
    folder = tmp_path / "run" / "model"
    assert f"to share:    {folder}" in out
    args, sd, meta = read_model_folder(folder)
    args2, sd2, _ = read_model_file(tmp_path / "run" / "custom.pth")
    assert args == args2 and all(torch.equal(sd[k], sd2[k]) for k in sd2)
    config = json.loads((folder / "config.json").read_text())
    assert config["training"]["command"].startswith("python train.py data.root=")
    assert config["training"]["steps"] == 2 and config["training"]["images"] == 4
    assert config["metrics"] and "style.jpg" in config["files"]
    # the preview is the sample sheet, byte for byte
    assert (folder / "samples.jpg").read_bytes() == (tmp_path / "run" / "preview.jpg").read_bytes()
    assert front_matter((folder / "README.md").read_text())["library_name"] == "transformer-net"
