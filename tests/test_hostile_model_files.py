"""Hostile model files (issue 30, items 1 and 5).

A count or size read from a file must not cost memory: a tiny file declaring a
huge tensor is refused before anything is allocated, and these tests prove it
under a cap on this process's memory (RLIMIT_DATA: a loader that allocates what
the file declares fails here with a MemoryError instead of taking the machine).
A malformed ``config.json`` is one ``not a transformer-net model (why)`` line, and
among good models it is skipped with a line naming it.
"""

from __future__ import annotations

import contextlib
import json
import resource
import time
from pathlib import Path

import pytest
import torch

import app as app_command
from tests.conftest import write_photo
from tests.test_scripting import run, tiny
from tests.test_sharing import hub_cache, lay_out_cache  # noqa: F401 - a fixture and its helper
from transformer_net import safetensors_file
from transformer_net.catalog import describe, describe_all, find_models
from transformer_net.checkpoint import load_model, read_model_file
from transformer_net.errors import ModelFileError
from transformer_net.model import TransformerNet
from transformer_net.model_folder import is_our_folder, listed_files, save_model_folder

HUGE = 2**40  # styles, or channels: terabytes if anything is allocated from it
# What a load may take beyond the file's own size: the interpreter's and torch's
# small allocations (a few MB), never the gigabytes a declared count would cost.
SLACK = 64 * 2**20


def _vm_data() -> int:
    """This process's private writable memory (what RLIMIT_DATA counts), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmData in /proc/self/status")


@contextlib.contextmanager
def memory_cap(extra: int):
    """At most ``extra`` more bytes of private memory for this process, then as before."""
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = _vm_data() + extra
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*")) if path.is_dir() else path.stat().st_size


@contextlib.contextmanager
def bounded(path: Path, seconds: float = 20.0):
    """Reading ``path`` may take a small multiple of its size in memory, and little time."""
    start = time.monotonic()
    with memory_cap(SLACK + 10 * _size(path)):
        yield
    assert time.monotonic() - start < seconds


def _state_dict(**kwargs) -> dict[str, torch.Tensor]:
    return {
        k: v.clone()
        for k, v in TransformerNet(channels=(4, 8, 8), num_residual=1, **kwargs)
        .state_dict()
        .items()
    }


@pytest.fixture
def good(tmp_path) -> Path:
    """A model folder as export writes one (a multi-style model with its paintings)."""
    model = tiny(tmp_path / "good.pth", 0, styles=["candy", "udnie"], name="mix")
    return save_model_folder(model, tmp_path / "good")


def _rewrite(folder: Path, tensors: dict | None = None, **config) -> Path:
    """``folder`` with other weights and config.json entries (None: the entry removed)."""
    if tensors is not None:
        safetensors_file.save_file(tensors, folder / "model.safetensors")
    path = folder / "config.json"
    data = json.loads(path.read_text())
    for key, value in config.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))
    return folder


def _many_styles_folder(tmp_path: Path) -> Path:
    """A 3 kB folder whose first norm declares 2**40 styles of 0 channels: no bytes."""
    model = tiny(tmp_path / "src.pth", 0)
    folder = save_model_folder(model, tmp_path / "many_styles")
    sd = _state_dict()
    sd["in1.weight"] = torch.empty(HUGE, 0)
    return _rewrite(
        folder, sd, model_args={"channels": [4, 8, 8], "num_residual": 1, "num_styles": HUGE}
    )


def _hostile_files(tmp_path: Path) -> dict[str, Path]:
    """Each layout's file that declares far more than it holds."""
    files = {"folder": _many_styles_folder(tmp_path)}
    sd = _state_dict()
    sd["in1.weight"] = torch.empty(HUGE, 0)
    torch.save(sd, files.setdefault("state dict", tmp_path / "styles.pth"))
    lightning = {
        "pytorch-lightning_version": "2.6.0",
        "state_dict": {f"transformer.{k}": v for k, v in sd.items()},
    }
    torch.save(lightning, files.setdefault("lightning", tmp_path / "styles.ckpt"))
    # Weights that repeat one stored number (stride 0): 4 bytes in the file, a
    # 16384-wide network (gigabytes) when built or even checked for NaN.
    wide = 2**14
    one = torch.zeros(1)
    sd = _state_dict()
    for name, shape in {
        "conv1.conv2d.weight": (wide, 3, 9, 9),
        "conv2.conv2d.weight": (wide, wide, 3, 3),
        "conv3.conv2d.weight": (wide, wide, 3, 3),
    }.items():
        sd[name] = one.expand(*shape)
    torch.save(sd, files.setdefault("repeated", tmp_path / "repeated.pth"))
    return files


@pytest.mark.parametrize("layout", ["folder", "state dict", "lightning", "repeated"])
def test_a_file_declaring_huge_tensors_is_refused_without_allocating(tmp_path, layout):
    path = _hostile_files(tmp_path)[layout]
    for read in (read_model_file, describe, load_model):  # info, sheet and the app; stylize.py
        with bounded(path), pytest.raises(ModelFileError) as e:
            read(path)
        message = str(e.value)
        assert message.startswith(str(path)) and "\n" not in message
        assert "not a transformer-net model (" in message


@pytest.mark.parametrize("command", ["info", "stylize", "sheet", "app"])
def test_every_entry_point_refuses_a_huge_declared_count_quickly(
    tmp_path, command, capsys, monkeypatch
):
    folder = _many_styles_folder(tmp_path)
    photo = write_photo(tmp_path / "photo.png", size=(16, 12))
    argv = {
        "info": ["info", folder],
        "stylize": ["--model", folder, "--input", photo, "--output", tmp_path / "out.png"],
        "sheet": ["sheet", "--input", photo, "--models", folder, "--output", tmp_path / "s.png"],
    }
    if command == "app":
        pytest.importorskip("gradio")
        import transformer_net.app  # noqa: F401 - Gradio itself, imported before the cap
    with bounded(folder):
        if command == "app":
            capsys.readouterr()
            rc = app_command.main(["--models", str(folder)])
            err = capsys.readouterr().err
        else:
            r = run(capsys, *argv[command])
            rc, err = r.rc, r.err
    assert rc == 2 and "Traceback" not in err, err
    assert f"{folder}" in err and "not a transformer-net model (" in err
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "s.png").exists()


def test_a_huge_count_through_hf_is_refused_without_allocating(tmp_path, hub_cache):  # noqa: F811
    snapshot = lay_out_cache(hub_cache, "mallory/tiny", _many_styles_folder(tmp_path))
    with bounded(snapshot), pytest.raises(ModelFileError, match="not a transformer-net model"):
        describe("hf://mallory/tiny")


def test_onnx_metadata_declaring_a_huge_count_is_not_believed(tmp_path):
    onnx = pytest.importorskip("onnx")
    from transformer_net.export import export_onnx

    path = export_onnx(TransformerNet(channels=(4, 8, 8), num_residual=1), tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    proto.metadata_props.add(key="model_args", value=json.dumps({"num_styles": HUGE}))
    proto.metadata_props.add(key="meta", value=json.dumps({"style": "wave"}))
    onnx.save(proto, str(path))
    with bounded(path):
        info = describe(path)
    assert info.style_names == ["wave"]  # the graph takes one style: its metadata lies


def test_shapes_must_be_exactly_the_architectures(tmp_path, good):
    """A tensor of another shape is named, for each layout, before a network is built."""
    sd = _state_dict(num_styles=2)
    sd["res1.in2.bias"] = torch.zeros(2, 9)
    _rewrite(good, sd)
    with pytest.raises(ModelFileError) as e:
        describe(good)
    assert str(e.value) == (
        f"{good / 'model.safetensors'}: not a transformer-net model ('res1.in2.bias' has shape "
        "(2, 9), expected (2, 8))"
    )


# --- item 5: config.json -----------------------------------------------------------------


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# Each: config.json's text from the good one's -> the reason in the error.
BAD_CONFIGS = {
    "deep nesting": (
        lambda text: text.replace('"training": {', f'"deep": {_nested(100_000)}, "training": {{'),
        "nested deeper than",
    ),
    "huge integer": (
        lambda text: text.replace('"global_step": 7', '"global_step": ' + "9" * 5000),
        "global_step",
    ),
    "big integer": (
        lambda text: text.replace('"global_step": 7', '"global_step": ' + "9" * 40),
        "global_step",
    ),
    "negative size": (
        lambda text: text.replace('"global_step": 7', '"image_size": -4'),
        "image_size",
    ),
    "styles a number": (lambda text: text.replace('"styles": [', '"styles": 5, "x": ['), "styles"),
    "style files a number": (
        lambda text: text.replace('"style_image_files": [', '"style_image_files": 7, "x": ['),
        "style_image_files",
    ),
    "metrics of text": (
        lambda text: text.replace('"style": "mix"', '"metrics": {"loss": "low"}, "style": "mix"'),
        "metrics",
    ),
    "not a number": (
        lambda text: text.replace('"style": "mix"', '"metrics": {"loss": NaN}, "style": "mix"'),
        "metrics",
    ),
    "style a dict": (lambda text: text.replace('"style": "mix"', '"style": {"a": 1}'), "style"),
    "channels text": (
        lambda text: text.replace('"channels": [', '"channels": "abc", "x": ['),
        "channels",
    ),
    "styles of numbers": (lambda text: text.replace('"candy"', "3"), "styles"),
    "version float": (lambda text: text.replace('"version": 1', '"version": 1.5'), "version"),
}


def _bad_config(folder: Path, case: str) -> Path:
    path = folder / "config.json"
    text = json.dumps(json.loads(path.read_text()), indent=1)
    edit, _ = BAD_CONFIGS[case]
    changed = edit(text)
    assert changed != text, case
    path.write_text(changed)
    return folder


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_a_malformed_config_is_one_line_naming_it(tmp_path, good, case, capsys):
    folder = _bad_config(good, case)
    with pytest.raises(ModelFileError) as e:
        read_model_file(folder)
    message = str(e.value)
    assert message.startswith(f"{folder / 'config.json'}: not a transformer-net model (")
    assert BAD_CONFIGS[case][1] in message and "\n" not in message and len(message) < 400
    r = run(capsys, "info", folder)
    assert r.rc == 2 and r.err == f"error: {message}\n" and r.out == ""
    assert isinstance(is_our_folder(folder), bool)  # export's question: never a traceback
    with pytest.raises(ModelFileError, match="config.json: not a transformer-net model"):
        listed_files(folder)  # what publishing uploads


def test_a_config_larger_than_any_model_needs_is_refused_unread(tmp_path, good):
    path = good / "config.json"
    data = json.loads(path.read_text())
    data["padding"] = "x" * (20 * 2**20)
    path.write_text(json.dumps(data))
    with memory_cap(SLACK), pytest.raises(ModelFileError, match="config.json: .*MB"):
        read_model_file(good)


@pytest.mark.parametrize("case", ["deep nesting", "huge integer", "styles a number"])
def test_a_bad_model_among_good_ones_is_skipped_by_sheet_and_app(
    tmp_path, good, case, capsys, monkeypatch
):
    bad = _bad_config(save_model_folder(good, tmp_path / "models" / "bad"), case)
    fine = save_model_folder(good, tmp_path / "models" / "fine")
    assert find_models([tmp_path / "models"]) == [bad, fine]
    infos, skipped = describe_all([bad, fine])
    assert [i.path for i in infos] == [fine] and [p for p, _ in skipped] == [bad]

    photo = write_photo(tmp_path / "photo.png", size=(16, 12))
    out = tmp_path / "sheet.png"
    r = run(
        capsys,
        "sheet",
        "--input",
        photo,
        "--models",
        tmp_path / "models",
        "--output",
        out,
        "--size",
        16,
        "--runtime",
        "torch",
    )
    assert r.rc == 1 and out.is_file() and "2 tile(s)" in r.out  # fine's two styles
    assert r.err.count("\n") == 1 and f"error: {bad / 'config.json'}: not a transformer" in r.err

    pytest.importorskip("gradio")
    from transformer_net import app as web

    shown: list = []

    class Page:
        def block_thread(self) -> None:  # the app would serve until Ctrl-C
            pass

    monkeypatch.setattr(web, "build_app", lambda infos, **_: shown.extend(infos) or Page())
    monkeypatch.setattr(web, "launch", lambda page, **_: "http://127.0.0.1:7860")
    capsys.readouterr()
    assert app_command.main(["--models", str(tmp_path / "models")]) == 0
    err = capsys.readouterr().err
    assert [i.path for i in shown] == [fine]
    assert err.startswith(f"note: {bad}: not shown ({bad / 'config.json'}: not a transformer")
    assert "Traceback" not in err


# --- more hostile files: thumbnails and metadata -------------------------------------------


def _jpeg_declaring(side: int) -> torch.Tensor:
    """A 600-byte JPEG whose header says ``side`` x ``side``: gigabytes once decoded."""
    import io
    import struct

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", side, side)
    return torch.frombuffer(data, dtype=torch.uint8)


def test_a_thumbnail_declaring_a_huge_picture_is_not_decoded(tmp_path):
    from transformer_net.checkpoint import save_model_file

    net = TransformerNet(channels=(4, 8, 8), num_residual=1)
    meta = {"style": "bomb", "style_thumbnails": [_jpeg_declaring(16000)]}
    path = save_model_file(net, tmp_path / "bomb.pth", meta=meta)
    with bounded(path):
        info = describe(path)  # info, sheet and the app's gallery
    assert info.style_names == ["bomb"] and info.thumbnails == [None]


def test_a_config_listing_one_image_many_times_reads_it_once_at_most(tmp_path, good):
    big = good / "style_0.jpg"
    big.write_bytes(big.read_bytes() + bytes(4 * 2**20))  # a JPEG with 4 MB after its end
    _rewrite(good, style_image_files=["style_0.jpg"] * 5000)
    with bounded(good):
        info = describe(good)
    assert info.style_names == ["candy", "udnie"] and info.thumbnails == [None, None]


def test_an_empty_painting_file_in_a_folder_is_no_thumbnail(tmp_path, good):
    (good / "style_1.jpg").write_bytes(b"")
    info = describe(good)  # the model, without its paintings (all or none, as from a .pth)
    assert info.style_names == ["candy", "udnie"] and info.thumbnails == [None, None]


@pytest.mark.parametrize(
    "meta,why",
    [
        ({"metrics": {"loss": torch.tensor(1.5)}}, "'metrics.loss' is a Tensor, not JSON data"),
        ({"dtype": torch.float32}, "'dtype' is a dtype, not JSON data"),
        ({"styles": ["a"], "loss": {"style_weight": float("inf")}}, "'loss.style_weight' is inf"),
    ],
)
def test_model_file_metadata_json_cannot_write_is_one_line(tmp_path, meta, why, capsys):
    from transformer_net.checkpoint import save_model_file

    path = save_model_file(
        TransformerNet(channels=(4, 8, 8), num_residual=1), tmp_path / "m.pth", meta=meta
    )
    r = run(capsys, "info", "--json", path)  # json.dumps would fail on it, or print Infinity
    assert r.rc == 2 and r.err.startswith(f"error: {path}: not a transformer-net model (")
    assert why in r.err and r.err.count("\n") == 1


def test_a_legacy_file_declaring_a_huge_storage_costs_no_memory(tmp_path):
    """torch's pre-zip format reserves each storage before reading it: 8 GB of address
    space for 365 bytes. Nothing of it is touched (no cap here: the reservation itself
    would fail under one), so the peak RSS stays put and the error is one line."""
    import io
    import struct

    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, buffer, _use_new_zipfile_serialization=False)
    numel = b"cpuq\x06K\x04N"  # the storage's location, then its element count (4)
    assert buffer.getvalue().count(numel) == 1
    path = tmp_path / "legacy.pth"
    path.write_bytes(
        buffer.getvalue().replace(numel, b"cpuq\x06J" + struct.pack("<i", 2**31 - 1) + b"N")
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB
    with pytest.raises(ModelFileError) as e:
        read_model_file(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 256 * 1024
    assert str(e.value).startswith(f"{path}: corrupt or not a PyTorch file (")
    assert "\n" not in str(e.value)
