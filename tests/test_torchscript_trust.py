"""TorchScript files run code when loaded: refused unless the user opts in (issue 30, item 9).

``torch.jit.load`` runs code from the file while loading it: a scripted module's
``__setstate__``, for one. The hostile file here prints a marker from its
``__setstate__``; every path that can reach ``torch.jit.load`` (stylize.py, its
``sheet`` and ``info``, the web app's model discovery, ``export_model.py``'s input,
``video_flicker.py``) must refuse it without the marker appearing, in one line,
and ``--trust-torchscript`` loads it (which is how the test knows the marker
would have appeared).
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

import app as app_command
from tests.conftest import script_main, write_photo
from transformer_net import stylize_cli
from transformer_net.checkpoint import save_model_file
from transformer_net.errors import UntrustedModelError
from transformer_net.export import export_torchscript
from transformer_net.model import TransformerNet
from transformer_net.runners import TorchScriptStylizer, model_file_kind, open_stylizer

MARKER = "hostile __setstate__ ran"
FLAG = "--trust-torchscript"


class _Hostile(nn.Module):
    """A module whose TorchScript archive runs ``__setstate__`` (a print) when loaded."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, bool]:
        return (self.scale, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
        print("hostile __setstate__ ran")  # MARKER: the file's code, run by torch.jit.load
        self.scale = state[0]
        self.training = state[1]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "wave.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; it still saves
        torch.jit.save(torch.jit.script(_Hostile()), str(path))
    assert model_file_kind(path) == "torchscript"
    return path


@pytest.fixture(scope="module")
def net() -> TransformerNet:
    torch.manual_seed(0)
    return TransformerNet(channels=(8, 16, 32), num_residual=1).eval()


@pytest.fixture(scope="module")
def models(net, tmp_path_factory) -> Path:
    """A folder of a .pth and a (harmless) TorchScript export of the same network."""
    root = tmp_path_factory.mktemp("models")
    save_model_file(net, root / "tiny.pth", meta={"style": "tiny"})
    export_torchscript(net, root / "tiny_ts.pt")
    return root


def test_hostile_file_runs_code_when_trusted(hostile, capfd):
    """The premise: loading this file runs its code (so a refusal that prints no
    marker really did not load it)."""
    TorchScriptStylizer(model_path=hostile, device="cpu", trust=True)
    assert MARKER in capfd.readouterr().out


def test_library_refuses_torchscript_without_trust(hostile, capfd):
    with pytest.raises(UntrustedModelError) as e:
        TorchScriptStylizer(model_path=hostile, device="cpu")
    with pytest.raises(UntrustedModelError):
        open_stylizer(hostile, device="cpu")
    message = str(e.value)
    assert message.startswith(f"{hostile}: refused: a TorchScript file runs code")
    assert "--" not in message  # the library names no CLI option; the CLIs add theirs
    assert MARKER not in capfd.readouterr().out


def test_stylize_refuses_torchscript_in_one_line(hostile, tmp_path, capfd):
    photo = write_photo(tmp_path / "in.png", size=(12, 10))
    out = tmp_path / "out.png"
    argv = ["--model", str(hostile), "--input", str(photo), "--output", str(out)]
    assert stylize_cli.main(argv) == 2
    captured = capfd.readouterr()
    assert MARKER not in captured.out and not out.exists()
    assert len(captured.err.splitlines()) == 1
    assert captured.err.startswith(f"error: {hostile}: refused") and FLAG in captured.err


def _disguised(hostile: Path, folder: Path, how: str) -> Path:
    """The hostile archive under another name, or with its ``code/`` entries renamed
    (then it is no TorchScript by our test, and ``torch.load(weights_only=True)`` reads it)."""
    if how == "renamed .pth":
        (folder / "wave.pth").write_bytes(hostile.read_bytes())
        return folder / "wave.pth"
    if how == "symlink .onnx":
        (folder / "wave.onnx").symlink_to(hostile)
        return folder / "wave.onnx"
    with zipfile.ZipFile(hostile) as src, zipfile.ZipFile(folder / "nocode.pt", "w") as dst:
        for name in src.namelist():
            top, _, rest = name.partition("/")
            renamed = f"{top}/cod3/{rest[5:]}" if rest.startswith("code/") else name
            dst.writestr(renamed, src.read(name))
    return folder / "nocode.pt"


@pytest.mark.parametrize("how", ["renamed .pth", "symlink .onnx", "code/ renamed"])
def test_disguised_torchscript_runs_no_code(hostile, tmp_path, capfd, how):
    model = _disguised(hostile, tmp_path, how)
    photo = write_photo(tmp_path / "in.png", size=(12, 10))
    argv = ["--model", str(model), "--input", str(photo), "--output", str(tmp_path / "o.png")]
    assert stylize_cli.main(argv) == 2
    captured = capfd.readouterr()
    assert MARKER not in captured.out and len(captured.err.splitlines()) == 1
    assert captured.err.startswith(f"error: {model}: refused")


def test_stylize_loads_torchscript_with_the_flag(models, tmp_path):
    photo = write_photo(tmp_path / "in.png", size=(12, 10))
    out = tmp_path / "out.png"
    argv = ["--model", str(models / "tiny_ts.pt"), "--input", str(photo), "--output", str(out)]
    assert stylize_cli.main([*argv, "--quiet", FLAG]) == 0
    assert out.is_file()


def test_sheet_refuses_torchscript_tiles_without_the_flag(hostile, models, tmp_path, capfd):
    """The other models' tiles are made (exit 1: a model failed); the refused one is
    a line naming the file and the flag."""
    photo = write_photo(tmp_path / "in.png", size=(16, 12))
    sheet = tmp_path / "sheet.png"
    argv = ["sheet", "--input", str(photo), "--output", str(sheet), "--device", "cpu"]
    assert stylize_cli.main([*argv, "--models", str(models), str(hostile)]) == 1
    captured = capfd.readouterr()
    assert MARKER not in captured.out and sheet.is_file()
    refused = [line for line in captured.err.splitlines() if "refused" in line]
    assert len(refused) == 2 and all(FLAG in line for line in refused)  # tiny_ts.pt, wave.pt
    sheet.unlink()
    assert stylize_cli.main([*argv, "--models", str(models), FLAG]) == 0
    assert sheet.is_file()


def test_info_describes_torchscript_without_loading_it(hostile, capfd):
    assert stylize_cli.main(["info", str(hostile)]) == 0
    captured = capfd.readouterr()
    assert MARKER not in captured.out
    assert "TorchScript export (legacy; runs code when loaded" in captured.out


def test_export_model_refuses_torchscript_input(hostile, tmp_path, capfd):
    out = tmp_path / "out.onnx"
    assert script_main("export_model")([str(hostile), str(out)]) == 2
    captured = capfd.readouterr()
    assert MARKER not in captured.out and not out.exists()
    assert len(captured.err.splitlines()) == 1 and str(hostile) in captured.err


def test_video_flicker_refuses_torchscript(hostile, tmp_path, capfd, monkeypatch):
    flicker = script_main("video_flicker")
    frames = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    monkeypatch.setitem(flicker.__globals__, "read_frames", lambda *a, **k: (frames, 25))
    assert flicker(["--model", str(hostile), "--input", str(tmp_path / "v.mp4")]) == 2
    captured = capfd.readouterr()
    assert MARKER not in captured.out
    assert len(captured.err.splitlines()) == 1 and f"{hostile}: refused" in captured.err


def test_app_shows_no_torchscript_model(hostile, capfd, monkeypatch):
    """The app finds models in folders by itself: it loads no TorchScript file and
    offers no option to (a note says why), and its stylizer cache refuses one too."""
    pytest.importorskip("gradio")
    from transformer_net import app as web

    monkeypatch.setattr(web, "launch", lambda *a, **k: pytest.fail("the app would serve it"))
    assert app_command.main(["--models", str(hostile.parent)]) == 2
    captured = capfd.readouterr()
    assert MARKER not in captured.out
    assert f"note: {hostile}: not shown (a TorchScript file runs code" in captured.err
    assert "no model found" in captured.err
    with pytest.raises(UntrustedModelError):
        web._Stylizers(device="cpu", threads=1).get(hostile, None)
    assert MARKER not in capfd.readouterr().out
    assert app_command.main(["--models", str(hostile), FLAG]) == 2  # no such option
    assert "unrecognized arguments: --trust-torchscript" in capfd.readouterr().err
