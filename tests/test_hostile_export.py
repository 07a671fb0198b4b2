"""Hostile cases of exporting and sharing (issue 30, items 2, 4 and 6).

``export_model.py --format folder --overwrite`` replaces the files it writes and
nothing else; a model shows and copies only the paintings it holds (its own
folder's files, thumbnails embedded in the file), never a path its metadata names;
``export_model.py``'s bad options and unwritable outputs are one ``error:`` line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests import test_runs, test_sharing
from tests.conftest import load_script, mounted_tmpfs, script_main, write_photo
from tests.test_optimize import _evaluate_argv
from tests.test_runs import fill
from tests.test_sharing import lay_out_cache, tiny_net
from transformer_net.catalog import describe
from transformer_net.checkpoint import load_model, save_model_file
from transformer_net.errors import ConfigError, DiskFullError, OutputExistsError
from transformer_net.image import load_image, style_thumbnail
from transformer_net.model import TransformerNet
from transformer_net.model_folder import save_model_folder

# fixtures of other test files: a model file as training writes one, a 4 MB disk, a Hub cache
model_file = test_sharing.model_file
hub_cache = test_sharing.hub_cache
small_disk = test_runs.small_disk


def export(capsys, *argv) -> tuple[int, str, str]:
    """export_model.py in-process: (exit code, stdout, stderr)."""
    try:
        rc = script_main("export_model")([str(a) for a in argv])
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str, *fragments: str) -> None:
    """``err`` is one ``error:`` line holding each fragment: no usage block, no traceback."""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


def same_output(a: Path, b: torch.nn.Module) -> bool:
    x = torch.rand(1, 3, 20, 24, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        return torch.allclose(load_model(a)[0].float()(x), b(x), atol=1e-4)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# --- item 2: --overwrite replaces the files the export writes, nothing else -------------


def test_overwrite_keeps_the_users_files_and_removes_only_its_own_stale_ones(
    tmp_path, model_file, capsys
):
    folder = tmp_path / "wave"
    rc, _, err = export(capsys, model_file, folder, "--format", "folder")
    assert rc == 0, err
    assert (folder / "style.jpg").is_file()
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    (folder / "notes.txt").write_text("mine")
    # a config.json that lists the user's files and .git must not get them deleted
    config = json.loads((folder / "config.json").read_text())
    config["files"] += ["notes.txt", ".git", ".gitattributes"]
    (folder / "config.json").write_text(json.dumps(config))
    # another model, without a painting: the old export's style.jpg is stale
    other = save_model_file(tiny_net(seed=1), tmp_path / "other.pth", meta={"style": "other"})
    rc, out, err = export(capsys, other, folder, "--format", "folder", "--overwrite")
    assert rc == 0, err
    assert (folder / ".git" / "HEAD").read_text() == "ref: refs/heads/main\n"
    assert (folder / ".gitattributes").read_text() == "*.safetensors filter=lfs\n"
    assert (folder / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in folder.iterdir()) == [
        ".git",
        ".gitattributes",
        "README.md",
        "config.json",
        "model.safetensors",
        "notes.txt",
    ]
    assert same_output(folder, tiny_net(seed=1))
    assert json.loads((folder / "config.json").read_text())["files"] == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    # nothing left beside the folder either (no temporary or moved-aside folders)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "custom.pth",
        "other.pth",
        "style.png",
        "wave",
    ]


def test_a_crash_while_overwriting_leaves_the_old_folder_whole(tmp_path, model_file, monkeypatch):
    from transformer_net import atomic

    folder = save_model_folder(model_file, tmp_path / "wave")
    (folder / "notes.txt").write_text("mine")
    before = snapshot(folder)
    real = atomic.os.fsync
    calls = []

    def crash(fd):  # the third file's sync: two are staged, none committed yet
        calls.append(fd)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(fd)

    monkeypatch.setattr(atomic.os, "fsync", crash)
    other = save_model_file(tiny_net(seed=1), tmp_path / "other.pth")
    with pytest.raises(KeyboardInterrupt):
        save_model_folder(other, folder, overwrite=True)
    monkeypatch.undo()
    assert snapshot(folder) == before  # every file as it was, no temporary file left
    assert sorted(p.name for p in folder.iterdir()) == sorted(before)


def test_a_full_disk_while_overwriting_leaves_the_old_folder_whole(
    tmp_path, model_file, small_disk
):
    folder = save_model_folder(model_file, small_disk / "wave")
    before = snapshot(folder)
    big = TransformerNet(channels=(32, 64, 128), num_residual=2)  # about 2 MB of weights
    big = save_model_file(big, tmp_path / "big.pth")
    fill(small_disk, leave=1 << 20)
    with pytest.raises(DiskFullError, match="disk full"):
        save_model_folder(big, folder, overwrite=True)
    assert snapshot(folder) == before


def test_a_folder_in_place_of_a_file_the_export_writes_is_refused(tmp_path, model_file):
    folder = save_model_folder(model_file, tmp_path / "wave")
    (folder / "README.md").unlink()
    (folder / "README.md").mkdir()
    (folder / "README.md" / "draft.md").write_text("mine")
    with pytest.raises(ConfigError, match=r"README.md: a folder, where the export writes a file"):
        save_model_folder(model_file, folder, overwrite=True)
    assert (folder / "README.md" / "draft.md").read_text() == "mine"


def test_a_folder_that_is_not_a_model_folder_is_refused_naming_what_it_holds(
    tmp_path, model_file, capsys
):
    folder = tmp_path / "repo"
    (folder / ".git").mkdir(parents=True)
    (folder / "train.py").write_text("print('mine')\n")
    rc, _, err = export(capsys, model_file, folder, "--format", "folder", "--overwrite")
    assert rc == 2
    one_error_line(err, f"{folder}: holds .git, train.py", "not a transformer-net model folder")
    assert sorted(p.name for p in folder.iterdir()) == [".git", "train.py"]


# --- item 4: only the paintings inside the model are shown or copied --------------------


@pytest.fixture
def secret(tmp_path) -> Path:
    """An image elsewhere on this machine that no model may show or copy."""
    return write_photo(tmp_path / "private" / "secret.png", size=(48, 40), seed=7)


def test_a_style_image_path_in_a_model_file_is_neither_shown_nor_copied(tmp_path, secret):
    model = save_model_file(tiny_net(), tmp_path / "m.pth", meta={"style_image": str(secret)})
    assert describe(model).thumbnails == [None]  # the gallery tile, sheet and Gatys style
    folder = save_model_folder(model, tmp_path / "out")
    assert not (folder / "style.jpg").exists()
    assert json.loads((folder / "config.json").read_text())["style_image_files"] == []


def test_a_style_image_path_in_a_config_json_is_neither_shown_nor_copied(
    tmp_path, model_file, secret
):
    folder = save_model_folder(model_file, tmp_path / "hostile")
    (folder / "style.jpg").unlink()
    config = json.loads((folder / "config.json").read_text())
    config.update(style_image=str(secret), style_image_files=[], files=config["files"][:-1])
    (folder / "config.json").write_text(json.dumps(config))
    assert describe(folder).thumbnails == [None]
    again = save_model_folder(folder, tmp_path / "again")
    assert not (again / "style.jpg").exists()


def test_a_symlink_in_a_model_folder_to_an_image_elsewhere_is_neither_shown_nor_copied(
    tmp_path, model_file, secret
):
    folder = save_model_folder(model_file, tmp_path / "hostile")
    (folder / "style.jpg").unlink()
    secret_jpeg = secret.with_suffix(".jpg")
    secret_jpeg.write_bytes(_jpeg_of(secret))
    (folder / "style.jpg").symlink_to(secret_jpeg)
    assert describe(folder).thumbnails == [None]
    again = save_model_folder(folder, tmp_path / "again")
    assert not (again / "style.jpg").exists()


def test_the_paintings_of_a_hub_snapshot_are_shown(tmp_path, model_file, hub_cache):
    # huggingface_hub's snapshots are symlinks into the repository's blobs: inside the model
    folder = save_model_folder(model_file, tmp_path / "model")
    lay_out_cache(hub_cache, "alice/tiny-style", folder)
    info = describe("hf://alice/tiny-style")
    assert info.thumbnails[0] is not None
    assert torch.equal(info.thumbnails[0], describe(folder).thumbnails[0])


def test_the_web_app_gallery_shows_no_image_named_in_metadata(tmp_path, secret):
    pytest.importorskip("gradio")
    from transformer_net.app import gallery_image

    model = save_model_file(tiny_net(), tmp_path / "m.pth", meta={"style_image": str(secret)})
    tile = gallery_image(describe(model))
    assert tile.size == (128, 128)  # the "no style image" placeholder, not the 48x40 photo


def test_evaluate_uses_the_painting_the_model_holds_not_a_path_it_names(tmp_path, secret, capsys):
    evaluate = load_script("evaluate").main
    write_photo(tmp_path / "photos" / "p.png", size=(36, 28))
    meta = {"style_image": str(secret), "loss": {"vgg_weights": "random"}}
    model = save_model_file(tiny_net(), tmp_path / "m.pth", meta=meta)
    assert evaluate(_evaluate_argv(model, tmp_path, "0")) == 2
    one_error_line(capsys.readouterr().err, f"{model}: the model holds no style image")
    assert not (tmp_path / "eval").exists()
    meta["style_thumbnails"] = [style_thumbnail(load_image(write_photo(tmp_path / "s.png")))]
    model = save_model_file(tiny_net(), tmp_path / "m.pth", meta=meta)
    assert evaluate(_evaluate_argv(model, tmp_path, "0")) == 0, capsys.readouterr().err
    assert (tmp_path / "eval" / "p_sheet.jpg").is_file()


def _jpeg_of(path: Path) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()


# --- item 6: export_model.py's bad options and outputs are one line ---------------------


@pytest.mark.parametrize(
    "argv,fragment",
    [
        ([], "the following arguments are required: checkpoint, output"),
        (["m.pth", "m.onnx", "--format", "zip"], "argument --format: invalid choice: 'zip'"),
        (["m.pth", "m.onnx", "--threads", "0"], "argument --threads: must be >= 1, got 0"),
        (["m.pth", "m.onnx", "--threads", "100000000"], "argument --threads: must be at most"),
        (["m.pth", "m.onnx", "--threads", "x"], "argument --threads: expected a whole number"),
        (["m.pth", "m.onnx", "--runs", "0"], "argument --runs: must be >= 1, got 0"),
        (["m.pth", "m.onnx", "--benchmark", "-5"], "argument --benchmark: must be >= 1, got -5"),
        (["m.pth", "m.onnx", "--opset", "5"], "argument --opset: must be in 12-23, got 5"),
        (["m.pth", "m.onnx", "--opset", "99"], "argument --opset: must be in 12-23, got 99"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(argv, fragment, capsys):
    rc, out, err = export(capsys, *argv)
    assert rc == 2 and out == ""
    one_error_line(err, fragment, "(see export_model.py --help)")


def test_an_output_that_is_a_folder_is_refused_for_a_file_format(tmp_path, model_file, capsys):
    (tmp_path / "m.onnx").mkdir()
    for extra in ([], ["--overwrite"]):
        rc, _, err = export(capsys, model_file, tmp_path / "m.onnx", *extra)
        assert rc == 2
        one_error_line(err, f"{tmp_path / 'm.onnx'}: a folder; onnx writes a file")
    assert list((tmp_path / "m.onnx").iterdir()) == []


@pytest.mark.parametrize("fmt", ["pth", "onnx", "folder"])
def test_an_output_under_a_regular_file_is_refused(tmp_path, model_file, fmt, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    out = tmp_path / "notes.txt" / "sub" / "m.out"
    rc, _, err = export(capsys, model_file, out, "--format", fmt)
    assert rc == 2
    one_error_line(err, f"{out}: {tmp_path / 'notes.txt'} is a file, not a folder")
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.fixture
def read_only(tmp_path) -> Path:
    """A read-only folder that root cannot write either (a read-only tmpfs), else skip."""
    yield from mounted_tmpfs(tmp_path / "ro", "ro,size=1m", "a read-only tmpfs")


@pytest.mark.parametrize(
    "name,fmt", [("m.pth", "pth"), ("m.onnx", "onnx"), ("m.pt", "torchscript"), ("m", "folder")]
)
def test_a_read_only_target_is_one_line(tmp_path, model_file, read_only, name, fmt, capsys):
    for out in (read_only / name, read_only / "sub" / name):
        rc, stdout, err = export(capsys, model_file, out, "--format", fmt)
        assert rc == 2 and "wrote" not in stdout
        one_error_line(err, f"{out}: cannot write in {read_only}", "Read-only file system")


def test_the_output_may_not_be_the_input_model(tmp_path, model_file, capsys):
    before = model_file.read_bytes()
    for fmt in ("onnx", "pth", "torchscript"):
        rc, _, err = export(capsys, model_file, model_file, "--format", fmt, "--overwrite")
        assert rc == 2
        one_error_line(err, f"{model_file}: the output is the input model")
    link = tmp_path / "link.onnx"
    link.symlink_to(model_file)
    rc, _, err = export(capsys, model_file, link, "--overwrite")
    assert rc == 2
    one_error_line(err, "the output is the input model")
    assert model_file.read_bytes() == before
    # a file inside an input model folder would replace part of it
    folder = save_model_folder(model_file, tmp_path / "wave")
    weights = folder / "model.safetensors"
    rc, _, err = export(capsys, folder, weights, "--format", "onnx", "--overwrite")
    assert rc == 2
    one_error_line(err, f"{weights}: inside the input model folder {folder}")
    assert same_output(folder, tiny_net())


def test_a_model_folder_may_be_exported_onto_itself(tmp_path, model_file, capsys):
    # everything is read before anything is written: the way to add samples to a folder
    folder = save_model_folder(model_file, tmp_path / "wave")
    photos = tmp_path / "photos"
    write_photo(photos / "a.png")
    argv = [folder, folder, "--format", "folder", "--overwrite", "--samples", photos]
    rc, _, err = export(capsys, *argv)
    assert rc == 0, err
    assert (folder / "samples.jpg").is_file() and (folder / "style.jpg").is_file()
    assert same_output(folder, tiny_net())


# --- more hostile cases ------------------------------------------------------------------


class _Stdout:
    """A standard output that takes nothing: ``error`` on every write."""

    def __init__(self, error: OSError):
        self.error = error

    def write(self, text: str) -> int:
        raise self.error

    def flush(self) -> None:
        raise self.error


@pytest.mark.parametrize(
    "error,code",
    [(OSError(28, "No space left on device"), 1), (BrokenPipeError(32, "Broken pipe"), 141)],
    ids=["full", "closed"],
)
def test_a_full_or_closed_stdout_is_one_line_and_keeps_the_export(
    tmp_path, model_file, error, code, monkeypatch, capsys
):
    out = tmp_path / "m.onnx"
    monkeypatch.setattr("sys.stdout", _Stdout(error))
    rc = script_main("export_model")([str(model_file), str(out)])
    monkeypatch.undo()
    assert rc == code
    err = capsys.readouterr().err
    if code == 1:
        one_error_line(err, "cannot write to standard output (No space left on device)")
    else:
        assert err == ""  # a reader that went away (`| head`): quietly, as after SIGPIPE
    assert same_output(model_file, load_model(model_file)[0].float())  # the input untouched
    assert out.stat().st_size > 0  # the export, written before the line that failed


def test_a_symlink_in_a_model_folder_is_replaced_never_written_through(
    tmp_path, model_file, capsys
):
    folder = save_model_folder(model_file, tmp_path / "wave")
    elsewhere = tmp_path / "bashrc"
    elsewhere.write_text("export PATH=...\n")
    (folder / "README.md").unlink()
    (folder / "README.md").symlink_to(elsewhere)
    rc, _, err = export(capsys, model_file, folder, "--format", "folder", "--overwrite")
    assert rc == 0, err
    assert elsewhere.read_text() == "export PATH=...\n"
    assert not (folder / "README.md").is_symlink()
    assert (folder / "README.md").read_text().startswith("---\n")


def test_a_folder_another_process_writes_meanwhile_is_kept(tmp_path, model_file, monkeypatch):
    from transformer_net import model_folder

    target = tmp_path / "wave"
    real = model_folder.atomic_write_bytes

    def and_another_run(path, data):  # the other run's folder appears mid-write
        if not target.exists():
            target.mkdir()
            (target / "config.json").write_text('{"theirs": true}')
        return real(path, data)

    monkeypatch.setattr(model_folder, "atomic_write_bytes", and_another_run)
    with pytest.raises(OutputExistsError, match="appeared while this was written"):
        save_model_folder(model_file, target)
    assert sorted(p.name for p in target.iterdir()) == ["config.json"]
    assert (target / "config.json").read_text() == '{"theirs": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["custom.pth", "style.png", "wave"]
