"""The stylize CLI against a second process, a full or closed stdout, and odd input
(issue 30, items 3, 7, 8 and 10).

Races are made deterministic: the file another run would write is created at the
point between planning and commit (a patched post-processing step), never by
racing processes. A full stdout is ``/dev/full``; a closed one, a pipe whose
reading end is closed. Everything runs in-process except the one test that needs
the interpreter's own exit (its last flush of stdout).
"""

from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import REPO, write_photo
from tests.test_scripting import json_lines, run, tiny
from transformer_net import atomic, color, stylize_cli
from transformer_net.atomic import atomic_write
from transformer_net.errors import OutputExistsError

THEIRS = b"written by another run"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny(tmp_path_factory.mktemp("m") / "wave.pth", 0, name="wave")


def _appears_meanwhile(monkeypatch, module, name: str, target: Path) -> None:
    """Another run writes ``target`` after this one planned its outputs, before it commits:
    ``module.name`` (a step between the two) is wrapped to create it on its first call."""
    real = getattr(module, name)

    def wrapped(*args, **kwargs):
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(THEIRS)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


def _lines(err: str) -> list[str]:
    """stderr's lines as a terminal shows them (a progress bar redraws with \\r)."""
    return [line.split("\r")[-1] for line in err.split("\n") if line.split("\r")[-1].strip()]


def _no_temporary_files(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if ".tmp" in p.name], list(folder.rglob("*"))


# --- item 3: outputs that appear while a run works are never replaced ------------------


def test_an_output_written_meanwhile_is_skipped_in_a_folder_run(
    tmp_path, model, monkeypatch, capsys
):
    src, dst = tmp_path / "in", tmp_path / "out"
    for name in ("a.png", "b.png"):
        write_photo(src / name, size=(20, 16))
    _appears_meanwhile(monkeypatch, stylize_cli, "postprocess", dst / "a.png")
    r = run(capsys, "--model", model, "--input", src, "--output", dst, "--json")
    assert r.rc == 0, r.err  # a skip is not a failure
    assert (dst / "a.png").read_bytes() == THEIRS  # the other run's result stays
    assert Image.open(dst / "b.png").size == (20, 16)
    objects = json_lines(r.out)
    (skipped,) = [o for o in objects if o["type"] == "skipped"]
    assert skipped["input"] == str(src / "a.png") and "already exists" in skipped["reason"]
    assert objects[-1]["done"] == 1 and objects[-1]["skipped"] == 1
    _no_temporary_files(dst)


def test_an_output_written_meanwhile_is_an_error_for_a_single_file(
    tmp_path, model, monkeypatch, capsys
):
    photo, out = write_photo(tmp_path / "p.png", size=(20, 16)), tmp_path / "o.png"
    _appears_meanwhile(monkeypatch, stylize_cli, "postprocess", out)
    r = run(capsys, "--model", model, "--input", photo, "--output", out)
    assert r.rc == 1 and out.read_bytes() == THEIRS
    assert r.err.strip().splitlines()[-1].startswith(f"error: {out}: already exists"), r.err
    _no_temporary_files(tmp_path)


def test_overwrite_still_replaces_an_output_written_meanwhile(tmp_path, model, monkeypatch, capsys):
    photo, out = write_photo(tmp_path / "p.png", size=(20, 16)), tmp_path / "o.png"
    _appears_meanwhile(monkeypatch, stylize_cli, "postprocess", out)
    r = run(capsys, "--model", model, "--input", photo, "--output", out, "--overwrite")
    assert r.rc == 0, r.err and Image.open(out).size == (20, 16)


def test_a_sheet_written_meanwhile_is_not_replaced(tmp_path, model, monkeypatch, capsys):
    from transformer_net import stylize_subcommands

    photo, out = write_photo(tmp_path / "p.png", size=(20, 16)), tmp_path / "s.png"
    _appears_meanwhile(monkeypatch, stylize_subcommands, "contact_sheet", out)
    r = run(capsys, "sheet", "--input", photo, "--models", model, "--output", out)
    assert r.rc == 1 and out.read_bytes() == THEIRS
    (line,) = _lines(r.err)
    assert line.startswith(f"error: {out}: already exists"), line


@pytest.mark.parametrize("link_error", [None, errno.EPERM, errno.EXDEV])
def test_no_clobber_commit_with_and_without_hard_links(tmp_path, monkeypatch, link_error):
    """A filesystem without hard links (FAT, some network mounts: EPERM) commits by
    claiming the name with O_EXCL first; the result is the same."""
    if link_error is not None:

        def no_links(src, dst, *args, **kwargs):
            raise OSError(link_error, os.strerror(link_error))

        monkeypatch.setattr(atomic.os, "link", no_links)
    path = tmp_path / "x.bin"
    with atomic_write(path, overwrite=False) as f:
        f.write(b"mine")
    assert path.read_bytes() == b"mine" and os.stat(path).st_nlink == 1
    with pytest.raises(OutputExistsError, match="already exists"):
        with atomic_write(path, overwrite=False) as f:
            f.write(b"second")
    assert path.read_bytes() == b"mine" and sorted(tmp_path.iterdir()) == [path]
    with atomic_write(path) as f:  # overwrite (the default) still replaces
        f.write(b"replaced")
    assert path.read_bytes() == b"replaced"


# --- item 7: a full or closed stdout ------------------------------------------------------


def _commands(tmp_path: Path, model: Path) -> dict[str, list]:
    photo = write_photo(tmp_path / "p.png", size=(20, 16))
    folder = tmp_path / "in"
    for k in range(3):
        write_photo(folder / f"{k}.png", size=(20, 16), seed=k)
    return {
        "info": ["info", model],
        "info --json": ["info", model, "--json"],
        "--output -": ["--model", model, "--input", photo, "--output", "-"],
        "sheet --output -": ["sheet", "--input", photo, "--models", model, "--output", "-"],
        "folder --json": [
            "--model",
            model,
            "--input",
            folder,
            "--output",
            tmp_path / "out",
            "--json",
        ],
        "folder": ["--model", model, "--input", folder, "--output", tmp_path / "out2"],
    }


def _run_into(stream_path_or_fd, argv, monkeypatch) -> int:
    stream = open(stream_path_or_fd, "w")  # noqa: SIM115 - closed below
    monkeypatch.setattr("sys.stdout", stream)
    try:
        code = stylize_cli.main([str(a) for a in argv])
        stream.flush()  # what the interpreter does at exit: must not fail
        return code
    finally:
        stream.close()


@pytest.mark.parametrize(
    "command", ["info", "info --json", "--output -", "sheet --output -", "folder --json", "folder"]
)
def test_a_full_stdout_is_one_line_and_exit_1(tmp_path, model, monkeypatch, capsys, command):
    argv = _commands(tmp_path, model)[command]
    capsys.readouterr()
    assert _run_into("/dev/full", argv, monkeypatch) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: cannot write to standard output (No space left on device); stopped"
    assert not [line for line in err if line.startswith("Traceback")]
    for out in (tmp_path / "out", tmp_path / "out2"):  # what was written is whole
        if out.exists():
            _no_temporary_files(out)
            for written in out.iterdir():
                assert Image.open(written).size == (20, 16)


@pytest.mark.parametrize(
    "command", ["info", "info --json", "--output -", "sheet --output -", "folder --json"]
)
def test_a_closed_stdout_stops_quietly_with_141(tmp_path, model, monkeypatch, capsys, command):
    argv = _commands(tmp_path, model)[command]
    read, write = os.pipe()
    os.close(read)  # the reader went away (`| head -1`)
    capsys.readouterr()
    assert _run_into(write, argv, monkeypatch) == 141
    assert "Traceback" not in capsys.readouterr().err


def test_the_interpreter_exit_adds_nothing_on_a_full_or_closed_stdout(model):
    """The interpreter's last flush of stdout (block-buffered into a file or pipe) must
    find nothing to fail on: no "Exception ignored ... BrokenPipeError", no exit 120."""
    command = [sys.executable, str(REPO / "stylize.py"), "info", str(model)]
    with open("/dev/full", "w") as full:
        proc = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == (
        "error: cannot write to standard output (No space left on device); stopped\n"
    )
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run(command, stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr


# --- item 8: a sheet never replaces its own photo ------------------------------------------


def test_sheet_refuses_to_replace_its_input_photo(tmp_path, model, capsys):
    photo = write_photo(tmp_path / "p.png", size=(20, 16))
    before = photo.read_bytes()
    for output in (photo, tmp_path / "." / ".." / tmp_path.name / "p.png"):
        r = run(capsys, "sheet", "--input", photo, "--models", model, "--output", output,
                "--overwrite")  # fmt: skip
        assert r.rc == 2 and r.err.strip() == f"error: {output}: output would overwrite the input"
    os.link(photo, tmp_path / "same.png")  # another name of the same file
    r = run(capsys, "sheet", "--input", photo, "--models", model, "--output",
            tmp_path / "same.png", "--overwrite")  # fmt: skip
    assert r.rc == 2 and "output would overwrite the input" in r.err
    assert photo.read_bytes() == before


# --- item 10 -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--input", "{tmp}/missing.png", "--output", "{tmp}/o.png"], 2, "input not found"),
        (["--input", "{tmp}/p.png", "--output", "{tmp}/o.png", "--threads", "0"], 2, "--threads"),
        (["info", "{tmp}/missing.pth"], 2, "model file not found"),
    ],
)
def test_a_fatal_error_under_json_is_a_json_object(tmp_path, model, capsys, argv, code, message):
    write_photo(tmp_path / "p.png")
    argv = [a.format(tmp=tmp_path) for a in argv]
    if argv[0] != "info":
        argv = ["--model", str(model), *argv]
    r = run(capsys, *argv, "--json")
    assert r.rc == code and message in r.err and len(r.err.strip().splitlines()) == 1
    (obj,) = json_lines(r.out)
    assert obj["type"] == "error" and message in obj["error"] and obj["exit_code"] == code
    assert obj["error"] == r.err.strip().removeprefix("error: ").split(" (see ")[0]


@pytest.mark.parametrize("command", [[], ["sheet"]])
def test_threads_has_an_upper_bound(tmp_path, model, capsys, command):
    photo = write_photo(tmp_path / "p.png")
    limit = stylize_cli.max_threads()
    assert limit >= 4 * (os.cpu_count() or 1)
    args = ["--input", photo, "--output", tmp_path / "o.png"]
    args += ["--models", model] if command else ["--model", model]
    r = run(capsys, *command, *args, "--threads", 10**9)
    assert r.rc == 2 and r.err.startswith("error: argument --threads: ") and str(limit) in r.err
    assert len(r.err.strip().splitlines()) == 1 and not (tmp_path / "o.png").exists()
    r = run(capsys, *command, *args, "--threads", limit, "--size", 16)
    assert r.rc == 0, r.err


def test_app_threads_has_the_same_bound(tmp_path, capsys):
    import app as app_command

    assert app_command.main(["--models", str(tmp_path), "--threads", str(10**9)]) == 2
    assert "error: argument --threads: " in capsys.readouterr().err


def test_info_json_is_json_even_with_nan_in_the_metadata(tmp_path, model, monkeypatch, capsys):
    """``info --json`` prints null for a non-finite number, never the non-JSON ``NaN``.

    Loading refuses NaN in a file's metadata now (``checkpoint.check_meta``); this
    is the printing side, for whatever number reaches it (the description is
    patched to carry them)."""
    from transformer_net import catalog, stylize_subcommands

    def with_nan(path):
        info = catalog.describe(path)
        info.meta["metrics"] = {"loss": math.nan, "style": -math.inf, "content": 1.5}
        return info

    monkeypatch.setattr(stylize_subcommands, "describe", with_nan)
    r = run(capsys, "info", model, "--json")
    assert r.rc == 0, r.err

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    info = json.loads(r.out, parse_constant=refuse)
    assert info["training"]["metrics"] == {"loss": None, "style": None, "content": 1.5}
    r = run(capsys, "info", model)  # people's text says nan, as Python does
    assert r.rc == 0 and "loss nan" in r.out


def test_a_failed_sheet_write_exits_1(tmp_path, model, capsys):
    photo = write_photo(tmp_path / "p.png", size=(20, 16))
    (tmp_path / "file").write_text("a file, not a folder")
    out = tmp_path / "file" / "sheet.png"
    r = run(capsys, "sheet", "--input", photo, "--models", model, "--output", out)
    (line,) = _lines(r.err)
    assert r.rc == 1 and line.startswith(f"error: {out}: cannot write image"), line


def test_a_non_number_strength_is_a_clear_message():
    gr = pytest.importorskip("gradio")
    from transformer_net import app as web
    from transformer_net.errors import ConfigError

    with pytest.raises(ConfigError, match=r"strength must be a number in \[0, 1\], got 'abc'"):
        color.check_strength("abc")
    slider = web.NumberSlider(0, 1, value=1, label="Strength")
    for bad in ("abc", None, [0.5], True, math.nan):
        with pytest.raises(gr.Error, match=r"Strength: expected a number from 0 to 1, got "):
            slider.preprocess(bad)
    assert slider.preprocess(0.25) == 0.25
    assert slider.get_block_name() == "slider"  # the page shows Gradio's own slider


def test_the_apps_offline_gatys_hint_names_no_option_of_other_tools(tmp_path, monkeypatch):
    """The app page cannot take --preprocessing (app.py has no such option): its hint
    is the one app.py gives; the library's own errors name no command-line option."""
    import app as app_command
    from tests.test_vgg_download import _refused_url
    from transformer_net import app as web
    from transformer_net import vgg as vgg_mod
    from transformer_net.errors import VGGWeightsError
    from transformer_net.optimize import perceptual_loss

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setattr(vgg_mod, "CAFFE_VGG16_URL", _refused_url("vgg16-00b39a1b.pth"))
    style = torch.zeros(3, 16, 16, dtype=torch.uint8)
    with pytest.raises(VGGWeightsError) as info:
        perceptual_loss(style)
    assert "--" not in str(info.value) and "vgg_weights" in str(info.value)
    import threading

    events = web.run_gatys(
        style,
        style,
        stop=threading.Event(),
        device="cpu",
        vgg_weights="caffe",
        vgg_hint=app_command.VGG_HINT,
        iterations=1,
        preserve_color=False,
    )
    with pytest.raises(VGGWeightsError) as info:
        list(events)
    message = str(info.value)
    assert message.endswith(app_command.VGG_HINT), message
    assert "--preprocessing" not in message and "stylize.py" not in message


def test_a_cache_entry_holding_another_models_export_is_rebuilt(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from transformer_net import runners
    from transformer_net.runners import open_stylizer

    monkeypatch.setenv("TRANSFORMER_NET_CACHE", str(tmp_path / "cache"))
    image = torch.randint(0, 256, (3, 13, 11), dtype=torch.uint8)
    a = tiny(tmp_path / "a.pth", 1, name="a")
    b = tiny(tmp_path / "b.pth", 2, name="b")
    expected_a = open_stylizer(a, device="cpu", runtime="torch")(image)
    expected_b = open_stylizer(b, device="cpu", runtime="onnxruntime")(image)  # b's entry
    entry_a, entry_b = runners.onnx_cache_path(a), runners.onnx_cache_path(b)
    entry_a.parent.mkdir(parents=True, exist_ok=True)
    entry_a.write_bytes(entry_b.read_bytes())  # a valid export, of the wrong model
    got = open_stylizer(a, device="cpu", runtime="onnxruntime")(image)
    assert not torch.equal(expected_a, expected_b)
    assert not torch.equal(got, expected_b)  # not b's pixels
    assert (got.int() - expected_a.int()).abs().max() <= 1  # a's (ONNX vs PyTorch: 1 level)
    assert entry_a.read_bytes() != entry_b.read_bytes()  # rebuilt
    assert runners.cache_entry_source(entry_a) == entry_a.stem
