"""stylize.py end to end: files, folders, sizes, errors.

Everything runs stylize.py's ``main()`` in this process; one test starts the
real entry point in a fresh interpreter (and checks what it imports).
"""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import REPO, write_photo
from tests.test_checkpoint import examples_state_dict, reference_forward
from transformer_net import inference, stylize_cli
from transformer_net.checkpoint import save_model_file
from transformer_net.errors import ConfigError
from transformer_net.export import export_onnx, export_torchscript
from transformer_net.inference import TorchStylizer
from transformer_net.model import TransformerNet
from transformer_net.runners import OnnxStylizer, TorchScriptStylizer, open_stylizer


def run_stylize(capsys, *args, check_rc=None) -> SimpleNamespace:
    """stylize.py's main() in this process -> returncode, stdout and stderr, like a subprocess."""
    capsys.readouterr()  # drop what earlier calls printed
    rc = stylize_cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    if check_rc is not None:
        assert rc == check_rc, err
    return SimpleNamespace(returncode=rc, stdout=out, stderr=err)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.pth"
    return save_model_file(TransformerNet(channels=(4, 8, 8), num_residual=1), path)


def test_entry_point_runs_and_imports_neither_lightning_nor_hydra(tiny_model, tmp_path):
    """The suite's one run of stylize.py itself, in a fresh interpreter (-X importtime lists
    every module it imports): it must start fast, without the training stack."""
    src = write_photo(tmp_path / "in.png", size=(37, 23))
    proc = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            str(REPO / "stylize.py"),
            "--model",
            str(tiny_model),
            "--input",
            str(src),
            "--output",
            str(tmp_path / "o.png"),
            "--precision",
            "fp32",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"[1/1] {src} -> {tmp_path / 'o.png'}  37x23" in proc.stdout
    assert Image.open(tmp_path / "o.png").size == (37, 23)
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert {"torch", "transformer_net", "PIL"} <= imported  # the list is real
    assert imported & {"pytorch_lightning", "lightning", "hydra", "omegaconf"} == set()


def test_help_ends_with_examples(capsys):
    out = run_stylize(capsys, "--help", check_rc=0).stdout
    assert out.startswith("usage: stylize.py") and "examples:" in out
    assert out.rstrip().splitlines()[-1].strip()


def test_single_image_keeps_odd_size_and_honours_exif(tmp_path, tiny_model, capsys):
    src = write_photo(tmp_path / "in.jpg", size=(37, 23))
    img = Image.open(src)
    exif = img.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    img.save(tmp_path / "rot.jpg", exif=exif)
    out = tmp_path / "o.png"
    proc = run_stylize(
        capsys, "--model", tiny_model, "--input", tmp_path / "rot.jpg", "--output", out, check_rc=0
    )
    assert f"[1/1] {tmp_path / 'rot.jpg'} -> {out}  23x37  " in proc.stdout and " ms" in proc.stdout
    assert Image.open(out).size == (23, 37)  # displayed size: rotated


def test_examples_model_gives_reference_output(tmp_path, capsys):
    sd = examples_state_dict(legacy=True)
    torch.save(sd, tmp_path / "candy.pth")
    src = write_photo(tmp_path / "p.png", size=(64, 48))
    # The reference is fp32; auto may pick bf16 (a GPU with --compile, an AVX512-BF16 CPU).
    run_stylize(
        capsys,
        "--model",
        tmp_path / "candy.pth",
        "--input",
        src,
        "--output",
        tmp_path / "o.png",
        "--precision",
        "fp32",
        check_rc=0,
    )
    x = torch.from_numpy(np.array(Image.open(src).convert("RGB"))).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        expected = reference_forward({k: v for k, v in sd.items() if "running" not in k}, x)
    expected = expected.clamp(0, 255).round()[0].permute(1, 2, 0).numpy()
    got = np.asarray(Image.open(tmp_path / "o.png")).astype(np.float32)
    assert np.abs(got - expected).max() <= 1.0


@pytest.mark.parametrize(
    "option,value,size", [("--size", 20, (20, 10)), ("--scale", 0.5, (40, 20))]
)
def test_resize_options(tmp_path, tiny_model, option, value, size, capsys):
    src = write_photo(tmp_path / "in.png", size=(80, 40))
    out = tmp_path / "out.png"
    argv = ["--model", tiny_model, "--input", src, "--output", out, option, value]
    run_stylize(capsys, *argv, check_rc=0)
    assert Image.open(out).size == size


def test_folder_recursive_keeps_paths_and_reports_bad_files(tmp_path, tiny_model, capsys):
    src = tmp_path / "in"
    write_photo(src / "a.jpg")
    write_photo(src / "sub" / "deep" / "b.png", mode="L")
    write_photo(src / "c.gif", mode="P")
    (src / "notes.txt").write_text("not an image")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    argv = ["--model", tiny_model, "--input", src, "--output", tmp_path / "out"]
    proc = run_stylize(capsys, *argv, check_rc=1)
    assert (tmp_path / "out" / "a.jpg").is_file()
    assert (tmp_path / "out" / "sub" / "deep" / "b.png").is_file()
    assert (tmp_path / "out" / "c.png").is_file()  # GIF written as PNG
    assert not (tmp_path / "out" / "broken.jpg").exists()
    assert "broken.jpg" in proc.stderr and "notes.txt" in proc.stderr
    assert "done 3, skipped 1, failed 1" in proc.stderr
    assert "Traceback" not in proc.stderr
    # A rerun skips finished outputs instead of redoing or overwriting them.
    proc = run_stylize(capsys, *argv, check_rc=1)
    assert "done 0, skipped 4, failed 1" in proc.stderr


def test_refuses_to_overwrite(tmp_path, tiny_model, capsys):
    src = write_photo(tmp_path / "in.png")
    model = ["--model", tiny_model, "--input", src]
    proc = run_stylize(capsys, *model, "--output", src, check_rc=2)
    assert proc.stderr == f"error: {src}: output would overwrite the input\n"
    (tmp_path / "exists.png").write_bytes(b"x")
    proc = run_stylize(capsys, *model, "--output", tmp_path / "exists.png", check_rc=2)
    assert "already exists (pass --overwrite to replace it)" in proc.stderr
    run_stylize(capsys, *model, "--output", tmp_path / "exists.png", "--overwrite", check_rc=0)
    assert Image.open(tmp_path / "exists.png").size == (40, 30)


@pytest.mark.parametrize(
    "content,message",
    [(b"", "empty file"), (b"not a model at all", "corrupt or not a PyTorch file")],
)
def test_bad_model_file_is_one_line_error(tmp_path, content, message, capsys):
    (tmp_path / "m.pth").write_bytes(content)
    src = write_photo(tmp_path / "in.png")
    argv = ["--model", tmp_path / "m.pth", "--input", src, "--output", tmp_path / "o.png"]
    proc = run_stylize(capsys, *argv, check_rc=2)
    assert message in proc.stderr and "m.pth" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_missing_input(tmp_path, tiny_model, capsys):
    argv = ["--model", tiny_model, "--input", tmp_path / "nope.jpg", "--output", tmp_path / "o.jpg"]
    proc = run_stylize(capsys, *argv, check_rc=2)
    assert proc.stderr == f"error: {tmp_path / 'nope.jpg'}: input not found\n"


def test_a_bug_keeps_its_traceback(tmp_path, tiny_model, monkeypatch, capsys):
    """Only the project's own errors become one-line messages: a plain RuntimeError from
    inside a runner is a bug, and main() lets it propagate with its traceback."""

    def broken(self, frames):
        raise RuntimeError("a bug in the runner")

    monkeypatch.setattr(TorchStylizer, "_one_pass", broken)
    src = write_photo(tmp_path / "in.png")
    argv = ["--model", str(tiny_model), "--input", str(src), "--output", str(tmp_path / "o.png")]
    argv += ["--runtime", "torch"]  # the runner patched above
    with pytest.raises(RuntimeError, match="a bug in the runner"):
        stylize_cli.main(argv)
    assert "error:" not in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_bf16_precision_matches_fp32_closely(tmp_path, tiny_model, capsys):
    src = write_photo(tmp_path / "in.png", size=(64, 48))
    for precision in ("fp32", "bf16"):
        argv = ["--model", tiny_model, "--input", src, "--output", tmp_path / f"{precision}.png"]
        run_stylize(capsys, *argv, "--precision", precision, check_rc=0)
    a = np.asarray(Image.open(tmp_path / "fp32.png")).astype(np.float64)
    b = np.asarray(Image.open(tmp_path / "bf16.png")).astype(np.float64)
    psnr = 10 * np.log10(255**2 / max(np.mean((a - b) ** 2), 1e-12))
    assert psnr > 30, psnr


def test_bf16_on_a_cpu_that_emulates_it_warns(tmp_path, tiny_model, monkeypatch, capsys):
    # On a CPU without AVX512-BF16/AMX, bf16 is emulated and far slower (docs/benchmarks.md).
    src = write_photo(tmp_path / "in.png", size=(16, 12))
    for native in (False, True):
        monkeypatch.setattr(inference, "native_bf16", lambda device, native=native: native)
        argv = ["--model", tiny_model, "--input", src, "--device", "cpu", "--quiet"]
        out = tmp_path / f"bf16-{native}.png"
        err = run_stylize(capsys, *argv, "--output", out, "--precision", "bf16", check_rc=0).stderr
        assert ("bf16 is emulated on this CPU" in err) is not native, err
        assert out.is_file()
        out = tmp_path / f"auto-{native}.png"  # auto never picks an emulated bf16
        err = run_stylize(capsys, *argv, "--output", out, "--precision", "auto", check_rc=0).stderr
        assert "emulated" not in err


def test_pipelined_folder_equals_one_by_one(tmp_path, tiny_model, capsys):
    src = tmp_path / "in"
    for i in range(6):
        write_photo(src / f"{i}.png", size=(30 + i, 20 + 2 * i), seed=i)
    argv = ["--model", tiny_model, "--input", src, "--precision", "fp32"]
    run_stylize(capsys, *argv, "--output", tmp_path / "a", "--io-threads", 1, check_rc=0)
    proc = run_stylize(capsys, *argv, "--output", tmp_path / "b", "--io-threads", 4, check_rc=0)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] for line in lines] == [f"[{i}/6" for i in range(1, 7)]  # input order
    for i in range(6):
        assert np.array_equal(
            np.asarray(Image.open(tmp_path / "a" / f"{i}.png")),
            np.asarray(Image.open(tmp_path / "b" / f"{i}.png")),
        )


def test_rgba_keeps_its_alpha_channel(tmp_path, tiny_model, capsys):
    arr = np.zeros((20, 30, 4), dtype=np.uint8)
    arr[..., :3] = 128
    arr[..., 3] = np.linspace(0, 255, 30, dtype=np.uint8)[None, :]
    Image.fromarray(arr, "RGBA").save(tmp_path / "in.png")
    argv = ["--model", tiny_model, "--input", tmp_path / "in.png"]
    run_stylize(capsys, *argv, "--output", tmp_path / "o.png", check_rc=0)
    out = Image.open(tmp_path / "o.png")
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[..., 3], arr[..., 3])
    run_stylize(capsys, *argv, "--output", tmp_path / "o.jpg", check_rc=0)
    assert Image.open(tmp_path / "o.jpg").mode == "RGB"  # JPEG has no alpha


def test_folder_mode_never_writes_outside_the_output_folder(tmp_path, tiny_model, capsys):
    src = tmp_path / "in"
    write_photo(src / "sub" / "a.png")
    write_photo(src / "b.png")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub").symlink_to(elsewhere)  # a planted symlink
    argv = ["--model", tiny_model, "--input", src, "--output", tmp_path / "out"]
    proc = run_stylize(capsys, *argv, check_rc=1)
    assert "leads outside" in proc.stderr
    assert not list(elsewhere.iterdir())
    assert (tmp_path / "out" / "b.png").is_file()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The same tiny network as a .pth, an ONNX and a TorchScript file, and under
    misleading names: the .pth called .onnx and without a suffix."""
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = TransformerNet(channels=(4, 8, 8), num_residual=1).eval()
    folder = tmp_path_factory.mktemp("exported")
    pth = save_model_file(net, folder / "m.pth")
    files = {
        "pth": pth,
        "onnx": export_onnx(net, folder / "m.onnx"),
        "torchscript": export_torchscript(net, folder / "m.pt"),
    }
    for name in ("renamed.onnx", "no_suffix"):
        (folder / name).write_bytes(pth.read_bytes())
        files[name] = folder / name
    (folder / "onnx_called.pth").write_bytes(files["onnx"].read_bytes())
    files["onnx_called.pth"] = folder / "onnx_called.pth"
    return files


@pytest.mark.parametrize(
    "name,runner",
    [
        ("pth", TorchStylizer),
        ("renamed.onnx", TorchStylizer),
        ("no_suffix", TorchStylizer),
        ("onnx", OnnxStylizer),
        ("onnx_called.pth", OnnxStylizer),
        ("torchscript", TorchScriptStylizer),
    ],
)
def test_open_stylizer_picks_the_runner_by_content(exported, name, runner):
    # runtime torch: PyTorch files in PyTorch (auto prefers onnxruntime on a CPU: test_runtime.py)
    runtime = "torch" if runner is TorchStylizer else "auto"
    trust = name == "torchscript"  # TorchScript runs code when loaded: opted in
    stylizer = open_stylizer(
        exported[name], device="cpu", precision="fp32", runtime=runtime, trust_torchscript=trust
    )
    assert type(stylizer) is runner
    assert stylizer.supports_video and stylizer.num_styles == 1
    image = torch.randint(0, 256, (3, 21, 17), dtype=torch.uint8)
    reference = open_stylizer(exported["pth"], device="cpu", precision="fp32", runtime="torch")
    assert (stylizer(image).int() - reference(image).int()).abs().max() <= 1


_FP32 = "--precision, --compile and --cuda-graphs apply to .pth/.ckpt models; ONNX and "
_TORCH = "--style-index, --style-mix and --tile-size apply to .pth/.ckpt models"


@pytest.mark.parametrize(
    "options,message",
    [
        ({"precision": "bf16"}, _FP32 + "TorchScript files run in fp32"),
        ({"compile": True}, _FP32 + "TorchScript files run in fp32"),
        ({"cuda_graphs": True}, _FP32 + "TorchScript files run in fp32"),
        ({"style": 1}, _TORCH),
        ({"style": [0.5, 0.5]}, _TORCH),
        ({"tile_size": 64}, _TORCH),
    ],
)
def test_open_stylizer_refuses_options_a_runner_ignores(exported, options, message):
    for kind in ("onnx", "torchscript"):
        with pytest.raises(ConfigError) as e:
            open_stylizer(exported[kind], device="cpu", **options)
        assert str(e.value) == f"{exported[kind]}: {message}"
    # fp32, style 0, tile 0 and a progress callback are what the traced files do anyway
    ok = {"precision": "fp32", "style": 0, "tile_size": 0, "progress": print}
    assert open_stylizer(exported["onnx"], device="cpu", **ok).dtype == torch.float32
    with pytest.raises(TypeError, match="unexpected options \\['precison'\\]"):
        open_stylizer(exported["onnx"], device="cpu", precison="fp32")  # a typo is a bug


def _make_inputs(folder):
    """One file per kind of input users throw at the tool; returns {name: expected outcome}."""
    folder.mkdir(parents=True)
    good = write_photo(folder / "rgb.jpg", size=(40, 30))
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(good.read_bytes()[:300])
    (folder / "text.jpg").write_text("this is not an image")
    write_photo(folder / "gray.png", mode="L")
    write_photo(folder / "palette.gif", mode="P")
    write_photo(folder / "cmyk.jpg", mode="CMYK")
    Image.fromarray(np.full((12, 10), 40000, dtype=np.uint16)).save(folder / "sixteen.png")
    Image.fromarray(np.zeros((1, 1, 3), dtype=np.uint8)).save(folder / "one.png")
    frames = [Image.new("RGB", (16, 12), c) for c in ("red", "blue")]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    return {
        "rgb.jpg": "ok",
        "gray.png": "ok",
        "palette.png": "ok",
        "cmyk.jpg": "ok",
        "sixteen.png": "ok",
        "one.png": "ok",
        "anim.png": "ok",
        "zero.jpg": "empty file",
        "truncated.jpg": "cannot decode",
        "text.jpg": "not an image",
    }


def test_every_kind_of_input_has_a_defined_outcome(tmp_path, tiny_model, capsys):
    expected = _make_inputs(tmp_path / "in")
    argv = ["--model", tiny_model, "--input", tmp_path / "in", "--output", tmp_path / "out"]
    proc = run_stylize(capsys, *argv, check_rc=1)
    for name, outcome in expected.items():
        out = tmp_path / "out" / name
        if outcome == "ok":
            assert out.is_file(), name
            src = next((tmp_path / "in").glob(Path(name).stem + ".*"))
            assert Image.open(out).size == Image.open(src).size, name
        else:
            assert not out.exists(), name
            line = next(line for line in proc.stderr.splitlines() if name in line)
            assert line.startswith("error: ") and outcome in line, line
    assert "done 7, skipped 0, failed 3" in proc.stderr and "Traceback" not in proc.stderr


def test_inputs_with_the_same_output_name_all_keep_their_result(tmp_path, tiny_model, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    write_photo(src / "a.png", seed=1)
    write_photo(src / "a.gif", seed=2, mode="P")  # GIF and PPM are written as PNG: a.png too
    write_photo(src / "a.ppm", seed=3)
    common = ["--model", tiny_model, "--precision", "fp32"]
    err = run_stylize(capsys, *common, "--input", src, "--output", out, check_rc=0).stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.gif.png", "a.png", "a.ppm.png"]
    assert f"note: {src / 'a.gif'} -> {out / 'a.gif.png'} (its plain output name is shared" in err
    assert "done 3, skipped 0, failed 0, renamed 2 (name clashes)" in err
    for name, result in [("a.png", "a.png"), ("a.gif", "a.gif.png"), ("a.ppm", "a.ppm.png")]:
        single = tmp_path / f"single-{name}.png"  # each output is the result of its own input
        run_stylize(capsys, *common, "--input", src / name, "--output", single, check_rc=0)
        assert np.array_equal(np.asarray(Image.open(out / result)), np.asarray(Image.open(single)))
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    err = run_stylize(
        capsys, *common, "--input", src, "--output", out, "--quiet", check_rc=0
    ).stderr
    assert "done 0, skipped 3, failed 0, renamed 2" in err and "note:" not in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # rerun: same names


def test_output_name_clashes_are_planned_before_any_work(tmp_path):
    from transformer_net.stylize_cli import Summary, plan_jobs

    src, dst = tmp_path / "in", tmp_path / "out"
    for name in ["a.png", "a.gif", "a.gif.png", "a.ppm", "B.jpg", "b.jpg", "c.tif"]:
        write_photo(src / name)
    summary = Summary()
    jobs = {p.name: o.name for p, o in plan_jobs(src, dst, summary)}
    assert jobs == {
        "a.png": "a.png",  # written under its own name: keeps it
        "a.gif.png": "a.gif.png",  # a real input holding the name a.gif would get
        "a.gif": "a.gif.2.png",
        "a.ppm": "a.ppm.png",
        "B.jpg": "B.jpg",  # one file on macOS and Windows: the first in sorted order keeps it
        "b.jpg": "b.jpg.jpg",
        "c.tif": "c.tif",
    }
    assert sorted(p.name for p, _, _ in summary.renamed) == ["a.gif", "a.ppm", "b.jpg"]
    assert not dst.exists()  # planning writes nothing


@pytest.mark.parametrize("content", ["nothing", "only text files"])
def test_folder_without_images_is_one_line_error(tmp_path, tiny_model, content, capsys):
    src = tmp_path / "in"
    src.mkdir()
    if content != "nothing":
        (src / "notes.txt").write_text("not an image")
    argv = ["--model", tiny_model, "--input", src, "--output", tmp_path / "out"]
    err = run_stylize(capsys, *argv, check_rc=1).stderr
    expected = "empty folder" if content == "nothing" else "no image or video files (1 other"
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: {src}: {expected}") and "nothing to stylize" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "option,message",
    [
        (["--scale", "inf"], "error: argument --scale: must be a finite number > 0, got inf"),
        (["--scale", "nan"], "error: argument --scale: must be a finite number > 0, got nan"),
        (["--scale", "0"], "error: argument --scale: must be a finite number > 0, got 0"),
        (["--scale", "-0.5"], "error: argument --scale: must be a finite number > 0, got -0.5"),
        (
            ["--scale", "1e6"],
            "error: argument --scale: 1e6 makes even a 1x1 image larger than "
            "the limit of 400 MP per image",
        ),
        (["--size", "0"], "error: argument --size: must be at least 1 pixel, got 0"),
        (["--size", "-8"], "error: argument --size: must be at least 1 pixel, got -8"),
        (["--size", "1e3"], "error: argument --size: expected a whole number of pixels, got '1e3'"),
        (
            ["--size", "100000"],
            "error: --size 100000: {src}: resizing 40x30 to 100000x75000 "
            "(7500 MP) exceeds the limit of 400 MP per image",
        ),
        (
            ["--scale", "1000"],
            "error: --scale 1000: {src}: resizing 40x30 to 40000x30000 "
            "(1200 MP) exceeds the limit of 400 MP per image",
        ),
        (
            ["--output", "{tmp}/out.xyz"],
            "error: --output {tmp}/out.xyz: Pillow cannot write "
            "'.xyz' images (use .jpg, .png, .webp or .tif)",
        ),
        (
            ["--output", "{tmp}/out.psd"],
            "error: --output {tmp}/out.psd: Pillow cannot write '.psd' images",
        ),
        (["--output", "{tmp}/out"], "error: --output {tmp}/out: no file extension"),
    ],
)
def test_bad_size_scale_and_output_name_are_refused_before_the_model_loads(
    tmp_path, option, message, capsys
):
    src = write_photo(tmp_path / "in.jpg", size=(40, 30))
    option = [o.format(tmp=tmp_path) for o in option]
    output = [] if option[0] == "--output" else ["--output", str(tmp_path / "o.png")]
    # The model file does not exist: reaching it would say "model file not found".
    argv = ["--model", tmp_path / "never.pth", "--input", src, *output, *option]
    err = run_stylize(capsys, *argv, check_rc=2).stderr
    assert err.count("\n") == 1, err
    assert err.startswith(message.format(src=src, tmp=tmp_path)), err
    assert list(tmp_path.iterdir()) == [src]


def test_too_large_resize_in_a_folder_fails_that_image_only(tmp_path, tiny_model, capsys):
    src = tmp_path / "in"
    write_photo(src / "small.png", size=(4, 3))
    write_photo(src / "big.png", size=(400, 300))
    argv = ["--model", tiny_model, "--input", src, "--output", tmp_path / "out", "--scale", 100]
    err = run_stylize(capsys, *argv, check_rc=1).stderr
    assert f"error: {src / 'big.png'}: resizing 400x300 to 40000x30000 (1200 MP) exceeds" in err
    assert Image.open(tmp_path / "out" / "small.png").size == (400, 300)
    assert "done 1, skipped 0, failed 1" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "name,payload,message",
    [
        ("nan.pth", "nan", "weights hold NaN/inf (1 of 576 values of 'res1.conv1.conv2d.weight')"),
        (
            "args.pth",
            "args",
            "not a transformer-net model ('model_args' is a list, expected a dict)",
        ),
        ("sd.pth", "sd", "not a transformer-net model ('state_dict' is a list, expected a dict)"),
    ],
)
def test_bad_model_contents_are_one_line_errors(
    tmp_path, tiny_model, name, payload, message, capsys
):
    raw = torch.load(tiny_model, weights_only=True)
    if payload == "nan":
        raw["state_dict"]["res1.conv1.conv2d.weight"][0, 0, 0, 0] = float("nan")
    elif payload == "args":
        raw["model_args"] = [4, 8, 8]
    else:
        raw["state_dict"] = list(raw["state_dict"].values())
    torch.save(raw, tmp_path / name)
    src = write_photo(tmp_path / "in.png")
    argv = ["--model", tmp_path / name, "--input", src, "--output", tmp_path / "o.png"]
    err = run_stylize(capsys, *argv, check_rc=2).stderr
    assert err == f"error: {tmp_path / name}: {message}" + (
        ": the model would give black images (training diverged?)\n" if payload == "nan" else "\n"
    )
    assert not (tmp_path / "o.png").exists()
