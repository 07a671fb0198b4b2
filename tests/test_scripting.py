"""stylize.py for scripts and pipes: --json, ``-`` for stdin/stdout, ``sheet``, ``info``.

All in this process (``stylize_cli.main``); stdin and stdout are swapped for
bytes buffers where a pipe is the subject.
"""

import io
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import write_photo
from transformer_net import stylize_cli
from transformer_net.catalog import describe, find_models, unique_labels
from transformer_net.checkpoint import save_model_file
from transformer_net.contact_sheet import LABEL_HEIGHT
from transformer_net.export import export_onnx
from transformer_net.image import style_thumbnail
from transformer_net.model import TransformerNet

TILE_PADDING = 4  # contact_sheet's make_grid padding


def run(capsys, *args) -> SimpleNamespace:
    capsys.readouterr()
    rc = stylize_cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return SimpleNamespace(rc=rc, out=out, err=err)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def tiny(path: Path, seed: int, *, styles: list[str] | None = None, name: str = "tiny") -> Path:
    torch.manual_seed(seed)
    net = TransformerNet(channels=(4, 8, 8), num_residual=1, num_styles=len(styles or [name]))
    with torch.no_grad():  # norms not at their init: each style of a model looks different
        for key, p in net.named_parameters():
            if p.dim() <= 2 and "conv" not in key:
                p.add_(torch.randn_like(p) * 0.3)
    painting = torch.randint(0, 256, (3, 30, 50), dtype=torch.uint8)
    meta = {"style": name, "styles": styles or [name], "global_step": 7}
    meta["style_thumbnails"] = [style_thumbnail(painting) for _ in meta["styles"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_model_file(net, path, meta=meta)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny(tmp_path_factory.mktemp("m") / "wave.pth", 0, name="wave")


class _Stdin:
    """A pipe: not a terminal, bytes on .buffer."""

    def __init__(self, data: bytes):
        self.buffer = io.BytesIO(data)

    def isatty(self) -> bool:
        return False


def test_json_objects_match_the_files_written(tmp_path, model, capsys):
    src = tmp_path / "in"
    sizes = {"a.png": (37, 23), "b.jpg": (20, 31), "sub/c.png": (16, 16)}
    for name, size in sizes.items():
        write_photo(src / name, size=size)
    (src / "notes.txt").write_text("not an image")
    (src / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    r = run(capsys, "--model", model, "--input", src, "--output", tmp_path / "out", "--json")
    assert r.rc == 1  # broken.jpg failed; the others are written
    objects = json_lines(r.out)  # every stdout line is JSON
    images = [o for o in objects if o["type"] == "image"]
    assert sorted(Path(o["input"]).relative_to(src).as_posix() for o in images) == sorted(sizes)
    for o in images:
        written = Image.open(o["output"])
        assert (
            list(written.size)
            == o["size"]
            == list(sizes[Path(o["input"]).relative_to(src).as_posix()])
        )
        assert o["milliseconds"] > 0 and o["runtime"]
    assert [o["input"] for o in objects if o["type"] == "error"] == [str(src / "broken.jpg")]
    assert [o["input"] for o in objects if o["type"] == "skipped"] == [str(src / "notes.txt")]
    summary = objects[-1]
    assert summary["type"] == "summary" and [o["type"] for o in objects].count("summary") == 1
    assert (summary["done"], summary["failed"], summary["skipped"]) == (3, 1, 1)
    assert summary["exit_code"] == 1
    assert "error: " in r.err and "broken.jpg" in r.err  # people still see the error


def test_stdin_to_stdout_round_trip_equals_file_to_file(tmp_path, model, capsysbinary, monkeypatch):
    photo = write_photo(tmp_path / "p.png", size=(41, 27))
    stylize_cli.main(
        ["--model", str(model), "--input", str(photo), "--output", str(tmp_path / "f.png")]
    )
    capsysbinary.readouterr()
    monkeypatch.setattr("sys.stdin", _Stdin(photo.read_bytes()))
    assert stylize_cli.main(["--model", str(model), "--input", "-", "--output", "-"]) == 0
    captured = capsysbinary.readouterr()
    piped = Image.open(io.BytesIO(captured.out))
    assert piped.format == "PNG" and piped.size == (41, 27)
    assert np.array_equal(np.asarray(piped), np.asarray(Image.open(tmp_path / "f.png")))
    assert b"<stdin> -> -" in captured.err  # the progress line moved to stderr

    monkeypatch.setattr("sys.stdin", _Stdin(photo.read_bytes()))
    args = ["--model", str(model), "--input", "-", "--output", "-", "--format", "jpg"]
    assert stylize_cli.main(args) == 0
    assert Image.open(io.BytesIO(capsysbinary.readouterr().out)).format == "JPEG"


@pytest.mark.parametrize(
    ("args", "stdin", "message", "code"),
    [
        (["--input", "-", "--output", "-", "--json"], b"x", "--json and --output - both", 2),
        (["--input", "{dir}", "--output", "-"], None, "is a folder; stdout takes one image", 2),
        (["--input", "{photo}", "--output", "{tmp}/o.png", "--format", "png"], None, "--format", 2),
        (["--input", "-", "--output", "{tmp}/o.png"], b"", "--input -: nothing on stdin", 2),
        # a bad image is failed work, as a bad file is
        (["--input", "-", "--output", "{tmp}/o.png", "--quiet"], b"GIF89a", "<stdin>: not an", 1),
    ],
)
def test_bad_pipe_usage_is_one_line(
    tmp_path, model, capsys, monkeypatch, args, stdin, message, code
):
    photo = write_photo(tmp_path / "d" / "p.png")
    values = {"dir": tmp_path / "d", "photo": photo, "tmp": tmp_path}
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", _Stdin(stdin))
    r = run(capsys, "--model", model, *[a.format(**values) for a in args])
    assert r.rc == code, r.err
    assert message in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert not (tmp_path / "o.png").exists()


def test_sheet_has_one_labelled_tile_per_model_and_style(tmp_path, capsys):
    models = tmp_path / "models"
    tiny(models / "a" / "wave.pth", 1, name="wave")  # two models named wave
    tiny(models / "b" / "wave.pth", 2, name="wave")
    tiny(models / "mix.pth", 3, styles=["candy", "udnie"], name="mix")
    (models / "a" / "notes.txt").write_text("ignored: not a model file name")
    (models / "a" / "last.ckpt").write_bytes(b"skipped: checkpoints are not searched")
    solo = tiny(tmp_path / "solo" / "udnie.pth", 4, name="udnie")  # a file, not a folder
    photo = write_photo(tmp_path / "photo.png", size=(48, 32))
    out = tmp_path / "sheet.png"
    args = ["--input", photo, "--models", models, solo, "--output", out, "--size", 48, "--json"]
    r = run(capsys, "sheet", *args)
    assert r.rc == 0, r.err
    objects = json_lines(r.out)
    labels = [o["label"] for o in objects if o["type"] == "tile"]
    assert labels == ["wave (a)", "wave (b)", "mix: candy", "mix: udnie", "udnie"]
    assert objects[-1]["tiles"] == 5 and objects[-1]["failed"] == 0
    sheet = np.asarray(Image.open(out).convert("L"), dtype=np.int32)
    tile_w, tile_h = 48 + TILE_PADDING, 32 + LABEL_HEIGHT + TILE_PADDING
    assert sheet.shape == (tile_h + TILE_PADDING, 6 * tile_w + TILE_PADDING)
    tiles = []
    for k in range(6):  # the photo, then one tile per model or style
        x = TILE_PADDING + k * tile_w
        label = sheet[TILE_PADDING : TILE_PADDING + LABEL_HEIGHT, x : x + 48]
        assert (label < 128).sum() > 20, f"tile {k} has no label text"
        tiles.append(
            sheet[TILE_PADDING + LABEL_HEIGHT : TILE_PADDING + LABEL_HEIGHT + 32, x : x + 48]
        )
    for i in range(6):  # different networks, different pictures
        for j in range(i + 1, 6):
            assert not np.array_equal(tiles[i], tiles[j]), (i, j)


def test_sheet_keeps_going_past_a_broken_model(tmp_path, model, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a model")
    photo = write_photo(tmp_path / "photo.png")
    out = tmp_path / "s.png"
    r = run(
        capsys, "sheet", "--input", photo, "--models", model, bad, "--output", out, "--size", 32
    )
    assert r.rc == 1 and f"error: {bad}" in r.err
    assert out.is_file() and "1 tile(s)" in r.out
    missing = tmp_path / "nothing"
    r = run(capsys, "sheet", "--input", photo, "--models", missing, "--output", tmp_path / "t.png")
    assert r.rc == 2 and "nothing: no such file or folder" in r.err


def test_info_tells_architecture_styles_training_and_runtimes(tmp_path, capsys):
    path = tiny(tmp_path / "mix.pth", 0, styles=["candy", "udnie"], name="mix")
    parameters = sum(
        p.numel()
        for p in TransformerNet(channels=(4, 8, 8), num_residual=1, num_styles=2).parameters()
    )
    r = run(capsys, "info", path)
    assert r.rc == 0, r.err
    assert f"parameters: {parameters:,}" in r.out
    assert "0 candy" in r.out and "1 udnie" in r.out and "7 steps" in r.out
    assert "pytorch" in r.out and "--runtime auto runs it in: torch" in r.out  # multi-style
    info = json.loads(run(capsys, "info", path, "--json").out)
    assert info["styles"] == ["candy", "udnie"] and info["parameters"] == parameters
    assert info["architecture"]["num_styles"] == 2 and info["training"]["global_step"] == 7
    assert any(r.startswith("pytorch") for r in info["runtimes"])
    r = run(capsys, "info", tmp_path / "missing.pth")
    assert r.rc == 2 and r.err.strip() == f"error: {tmp_path / 'missing.pth'}: model file not found"


def test_onnx_exports_keep_name_and_thumbnail(tmp_path, model):
    from transformer_net.checkpoint import load_model

    net, meta = load_model(model)
    onnx = tmp_path / "wave.onnx"
    export_onnx(net, onnx, meta=meta)
    a, b = describe(model), describe(onnx)
    assert b.kind == "onnx" and b.name == a.name == "wave"
    assert torch.equal(a.thumbnails[0], b.thumbnails[0])
    assert find_models([tmp_path]) == [onnx]
    assert unique_labels([a, b]) == [f"wave ({model.parent.name})", f"wave ({tmp_path.name})"]


def test_help_lists_commands_and_exit_codes(capsys):
    r = run(capsys, "--help")
    assert r.rc == 0 and "exit codes: 0 all done, 1 some inputs failed" in r.out
    assert "stylize.py sheet" in r.out and "stylize.py info" in r.out
    for command in ("sheet", "info"):
        r = run(capsys, command, "--help")
        assert r.rc == 0 and r.out.rstrip().splitlines()[0].startswith(
            "usage: stylize.py " + command
        )
        assert "examples:" in r.out


def test_a_closed_stdout_stops_quietly(tmp_path, model, monkeypatch, capsys):
    """``stylize.py info m.pth | head -1``: the reader goes away; no traceback, exit 141."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone: writes fail with EPIPE
    monkeypatch.setattr("sys.stdout", open(write, "w", buffering=1))  # noqa: SIM115
    try:
        assert stylize_cli.main(["info", str(model)]) == 141
    finally:
        sys.stdout.close()
    assert capsys.readouterr().err == ""
