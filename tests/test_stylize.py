"""stylize.py end to end: files, folders, sizes, errors."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import REPO, write_photo
from tests.test_checkpoint import examples_state_dict, reference_forward
from transformer_net.checkpoint import save_model_file
from transformer_net.model import TransformerNet


def run_stylize(*args, check_rc=None):
    proc = subprocess.run(
        [sys.executable, str(REPO / "stylize.py"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr
    return proc


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.pth"
    return save_model_file(TransformerNet(channels=(4, 8, 8), num_residual=1), path)


def test_help_ends_with_examples():
    out = run_stylize("--help", check_rc=0).stdout
    assert "examples:" in out and out.rstrip().splitlines()[-1].strip()


def test_single_image_keeps_odd_size_and_honours_exif(tmp_path, tiny_model):
    src = write_photo(tmp_path / "in.jpg", size=(37, 23))
    img = Image.open(src)
    exif = img.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    img.save(tmp_path / "rot.jpg", exif=exif)
    proc = run_stylize(
        "--model",
        tiny_model,
        "--input",
        tmp_path / "rot.jpg",
        "--output",
        tmp_path / "o.png",
        check_rc=0,
    )
    assert "ms" in proc.stdout
    assert Image.open(tmp_path / "o.png").size == (23, 37)  # displayed size: rotated


def test_examples_model_gives_reference_output(tmp_path):
    sd = examples_state_dict(legacy=True)
    torch.save(sd, tmp_path / "candy.pth")
    src = write_photo(tmp_path / "p.png", size=(64, 48))
    run_stylize(
        "--model",
        tmp_path / "candy.pth",
        "--input",
        src,
        "--output",
        tmp_path / "o.png",
        "--device",  # the reference is fp32; on a GPU the default would be bf16
        "cpu",
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
def test_resize_options(tmp_path, tiny_model, option, value, size):
    src = write_photo(tmp_path / "in.png", size=(80, 40))
    out = tmp_path / "out.png"
    run_stylize("--model", tiny_model, "--input", src, "--output", out, option, value, check_rc=0)
    assert Image.open(out).size == size


def test_folder_recursive_keeps_paths_and_reports_bad_files(tmp_path, tiny_model):
    src = tmp_path / "in"
    write_photo(src / "a.jpg")
    write_photo(src / "sub" / "deep" / "b.png", mode="L")
    write_photo(src / "c.gif", mode="P")
    (src / "notes.txt").write_text("not an image")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    proc = run_stylize(
        "--model", tiny_model, "--input", src, "--output", tmp_path / "out", check_rc=1
    )
    assert (tmp_path / "out" / "a.jpg").is_file()
    assert (tmp_path / "out" / "sub" / "deep" / "b.png").is_file()
    assert (tmp_path / "out" / "c.png").is_file()  # GIF written as PNG
    assert not (tmp_path / "out" / "broken.jpg").exists()
    assert "broken.jpg" in proc.stderr and "notes.txt" in proc.stderr
    assert "done 3, skipped 1, failed 1" in proc.stderr
    assert "Traceback" not in proc.stderr
    # A rerun skips finished outputs instead of redoing or overwriting them.
    proc = run_stylize("--model", tiny_model, "--input", src, "--output", tmp_path / "out")
    assert "done 0, skipped 4, failed 1" in proc.stderr


def test_refuses_to_overwrite(tmp_path, tiny_model):
    src = write_photo(tmp_path / "in.png")
    proc = run_stylize("--model", tiny_model, "--input", src, "--output", src, check_rc=2)
    assert "overwrite the input" in proc.stderr
    (tmp_path / "exists.png").write_bytes(b"x")
    proc = run_stylize(
        "--model", tiny_model, "--input", src, "--output", tmp_path / "exists.png", check_rc=2
    )
    assert "--overwrite" in proc.stderr
    run_stylize(
        "--model",
        tiny_model,
        "--input",
        src,
        "--output",
        tmp_path / "exists.png",
        "--overwrite",
        check_rc=0,
    )
    assert Image.open(tmp_path / "exists.png").size == (40, 30)


@pytest.mark.parametrize(
    "content,message",
    [(b"", "empty file"), (b"not a model at all", "corrupt or not a PyTorch file")],
)
def test_bad_model_file_is_one_line_error(tmp_path, content, message):
    (tmp_path / "m.pth").write_bytes(content)
    src = write_photo(tmp_path / "in.png")
    proc = run_stylize(
        "--model", tmp_path / "m.pth", "--input", src, "--output", tmp_path / "o.png", check_rc=2
    )
    assert message in proc.stderr and "m.pth" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_missing_input(tmp_path, tiny_model):
    proc = run_stylize(
        "--model",
        tiny_model,
        "--input",
        tmp_path / "nope.jpg",
        "--output",
        tmp_path / "o.jpg",
        check_rc=2,
    )
    assert "nope.jpg: input not found" in proc.stderr


def test_stylize_does_not_import_lightning_or_hydra(tiny_model, tmp_path):
    src = write_photo(tmp_path / "in.png")
    argv = [str(tiny_model), str(src), str(tmp_path / "o.png")]
    code = (
        "import sys; import transformer_net.stylize_cli as c;"
        f"rc = c.main(['--model', {argv[0]!r}, '--input', {argv[1]!r}, '--output', {argv[2]!r}]);"
        "heavy = ('pytorch_lightning', 'lightning', 'hydra', 'omegaconf');"
        "print(rc, [m for m in sys.modules if m.split('.')[0] in heavy])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert out.stdout.strip().splitlines()[-1] == "0 []", out.stderr


def test_bf16_precision_matches_fp32_closely(tmp_path, tiny_model):
    src = write_photo(tmp_path / "in.png", size=(64, 48))
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.png"
        run_stylize(
            "--model",
            tiny_model,
            "--input",
            src,
            "--output",
            out,
            "--precision",
            precision,
            check_rc=0,
        )
    a = np.asarray(Image.open(tmp_path / "fp32.png")).astype(np.float64)
    b = np.asarray(Image.open(tmp_path / "bf16.png")).astype(np.float64)
    psnr = 10 * np.log10(255**2 / max(np.mean((a - b) ** 2), 1e-12))
    assert psnr > 30, psnr


def test_bf16_on_a_cpu_that_emulates_it_warns(tmp_path, tiny_model, monkeypatch, capsys):
    # On a CPU without AVX512-BF16/AMX, bf16 is ~300x slower than fp32 (docs/benchmarks.md).
    import transformer_net.inference as inference
    from transformer_net import stylize_cli

    src = write_photo(tmp_path / "in.png", size=(16, 12))
    for native in (False, True):
        monkeypatch.setattr(inference, "native_bf16", lambda device, native=native: native)
        argv = ["--model", str(tiny_model), "--input", str(src), "--device", "cpu", "--quiet"]
        out = tmp_path / f"bf16-{native}.png"
        assert stylize_cli.main([*argv, "--output", str(out), "--precision", "bf16"]) == 0
        err = capsys.readouterr().err
        assert ("bf16 is emulated on this CPU" in err) is not native, err
        assert out.is_file()
        out = tmp_path / f"auto-{native}.png"  # auto never picks an emulated bf16
        assert stylize_cli.main([*argv, "--output", str(out), "--precision", "auto"]) == 0
        assert "emulated" not in capsys.readouterr().err


def test_pipelined_folder_equals_one_by_one(tmp_path, tiny_model):
    src = tmp_path / "in"
    for i in range(6):
        write_photo(src / f"{i}.png", size=(30 + i, 20 + 2 * i), seed=i)
    run_stylize(
        "--model",
        tiny_model,
        "--input",
        src,
        "--output",
        tmp_path / "a",
        "--io-threads",
        1,
        check_rc=0,
    )
    proc = run_stylize(
        "--model",
        tiny_model,
        "--input",
        src,
        "--output",
        tmp_path / "b",
        "--io-threads",
        4,
        check_rc=0,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] for line in lines] == [f"[{i}/6" for i in range(1, 7)]  # input order
    for i in range(6):
        assert np.array_equal(
            np.asarray(Image.open(tmp_path / "a" / f"{i}.png")),
            np.asarray(Image.open(tmp_path / "b" / f"{i}.png")),
        )


def test_rgba_keeps_its_alpha_channel(tmp_path, tiny_model):
    arr = np.zeros((20, 30, 4), dtype=np.uint8)
    arr[..., :3] = 128
    arr[..., 3] = np.linspace(0, 255, 30, dtype=np.uint8)[None, :]
    Image.fromarray(arr, "RGBA").save(tmp_path / "in.png")
    run_stylize(
        "--model",
        tiny_model,
        "--input",
        tmp_path / "in.png",
        "--output",
        tmp_path / "o.png",
        check_rc=0,
    )
    out = Image.open(tmp_path / "o.png")
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[..., 3], arr[..., 3])
    run_stylize(
        "--model",
        tiny_model,
        "--input",
        tmp_path / "in.png",
        "--output",
        tmp_path / "o.jpg",
        check_rc=0,
    )
    assert Image.open(tmp_path / "o.jpg").mode == "RGB"  # JPEG has no alpha


def test_folder_mode_never_writes_outside_the_output_folder(tmp_path, tiny_model):
    src = tmp_path / "in"
    write_photo(src / "sub" / "a.png")
    write_photo(src / "b.png")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub").symlink_to(elsewhere)  # a planted symlink
    proc = run_stylize(
        "--model", tiny_model, "--input", src, "--output", tmp_path / "out", check_rc=1
    )
    assert "leads outside" in proc.stderr
    assert not list(elsewhere.iterdir())
    assert (tmp_path / "out" / "b.png").is_file()


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
        "rgb.jpg": "ok", "gray.png": "ok", "palette.png": "ok", "cmyk.jpg": "ok",
        "sixteen.png": "ok", "one.png": "ok", "anim.png": "ok",
        "zero.jpg": "empty file", "truncated.jpg": "cannot decode", "text.jpg": "not an image",
    }  # fmt: skip


def test_every_kind_of_input_has_a_defined_outcome(tmp_path, tiny_model):
    expected = _make_inputs(tmp_path / "in")
    proc = run_stylize(
        "--model", tiny_model, "--input", tmp_path / "in", "--output", tmp_path / "out", check_rc=1
    )
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


def _main(*args) -> tuple[int, str]:
    """stylize.py's main() in this process -> (exit code, stderr); argparse exits too."""
    import contextlib
    import io

    from transformer_net import stylize_cli

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = stylize_cli.main([str(a) for a in args])
        except SystemExit as e:  # argparse's errors
            rc = e.code
    return rc, err.getvalue()


def test_inputs_with_the_same_output_name_all_keep_their_result(tmp_path, tiny_model):
    src, out = tmp_path / "in", tmp_path / "out"
    write_photo(src / "a.png", seed=1)
    write_photo(src / "a.gif", seed=2, mode="P")  # GIF and PPM are written as PNG: a.png too
    write_photo(src / "a.ppm", seed=3)
    rc, err = _main("--model", tiny_model, "--input", src, "--output", out)
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a.gif.png", "a.png", "a.ppm.png"]
    assert f"note: {src / 'a.gif'} -> {out / 'a.gif.png'} (its plain output name is shared" in err
    assert "done 3, skipped 0, failed 0, renamed 2 (name clashes)" in err
    for name, result in [("a.png", "a.png"), ("a.gif", "a.gif.png"), ("a.ppm", "a.ppm.png")]:
        single = tmp_path / f"single-{name}.png"  # each output is the result of its own input
        assert _main("--model", tiny_model, "--input", src / name, "--output", single)[0] == 0
        assert np.array_equal(np.asarray(Image.open(out / result)), np.asarray(Image.open(single)))
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    rc, err = _main("--model", tiny_model, "--input", src, "--output", out, "--quiet")
    assert rc == 0 and "done 0, skipped 3, failed 0, renamed 2" in err and "note:" not in err
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
def test_folder_without_images_is_one_line_error(tmp_path, tiny_model, content):
    src = tmp_path / "in"
    src.mkdir()
    if content != "nothing":
        (src / "notes.txt").write_text("not an image")
    rc, err = _main("--model", tiny_model, "--input", src, "--output", tmp_path / "out")
    expected = "empty folder" if content == "nothing" else "no image or video files (1 other"
    assert rc == 1 and err.count("\n") == 1, err
    assert err.startswith(f"error: {src}: {expected}") and "nothing to stylize" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "option,message",
    [
        (["--scale", "inf"], "error: argument --scale: must be a finite number > 0, got inf"),
        (["--scale", "nan"], "error: argument --scale: must be a finite number > 0, got nan"),
        (["--scale", "0"], "error: argument --scale: must be a finite number > 0, got 0"),
        (["--scale", "-0.5"], "error: argument --scale: must be a finite number > 0, got -0.5"),
        (["--scale", "1e6"], "error: argument --scale: 1e6 makes even a 1x1 image larger than "
                             "the limit of 400 MP per image"),
        (["--size", "0"], "error: argument --size: must be at least 1 pixel, got 0"),
        (["--size", "-8"], "error: argument --size: must be at least 1 pixel, got -8"),
        (["--size", "1e3"], "error: argument --size: expected a whole number of pixels, got '1e3'"),
        (["--size", "100000"], "error: --size 100000: {src}: resizing 40x30 to 100000x75000 "
                               "(7500 MP) exceeds the limit of 400 MP per image"),
        (["--scale", "1000"], "error: --scale 1000: {src}: resizing 40x30 to 40000x30000 "
                              "(1200 MP) exceeds the limit of 400 MP per image"),
        (["--output", "{tmp}/out.xyz"], "error: --output {tmp}/out.xyz: Pillow cannot write "
                                        "'.xyz' images (use .jpg, .png, .webp or .tif)"),
        (["--output", "{tmp}/out.psd"], "error: --output {tmp}/out.psd: Pillow cannot write "
                                        "'.psd' images"),
        (["--output", "{tmp}/out"], "error: --output {tmp}/out: no file extension"),
    ],
)  # fmt: skip
def test_bad_size_scale_and_output_name_are_refused_before_the_model_loads(
    tmp_path, option, message
):
    src = write_photo(tmp_path / "in.jpg", size=(40, 30))
    option = [o.format(tmp=tmp_path) for o in option]
    output = [] if option[0] == "--output" else ["--output", str(tmp_path / "o.png")]
    # The model file does not exist: reaching it would say "model file not found".
    rc, err = _main("--model", tmp_path / "never.pth", "--input", src, *output, *option)
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith(message.format(src=src, tmp=tmp_path)), err
    assert list(tmp_path.iterdir()) == [src]


def test_too_large_resize_in_a_folder_fails_that_image_only(tmp_path, tiny_model):
    src = tmp_path / "in"
    write_photo(src / "small.png", size=(4, 3))
    write_photo(src / "big.png", size=(400, 300))
    rc, err = _main("--model", tiny_model, "--input", src, "--output", tmp_path / "out",
                    "--scale", "100")  # fmt: skip
    assert rc == 1
    assert f"error: {src / 'big.png'}: resizing 400x300 to 40000x30000 (1200 MP) exceeds" in err
    assert Image.open(tmp_path / "out" / "small.png").size == (400, 300)
    assert "done 1, skipped 0, failed 1" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "name,payload,message",
    [
        ("nan.pth", "nan", "weights hold NaN/inf (1 of 576 values of 'res1.conv1.conv2d.weight')"),
        ("args.pth", "args",
         "not a transformer-net model ('model_args' is a list, expected a dict)"),
        ("sd.pth", "sd", "not a transformer-net model ('state_dict' is a list, expected a dict)"),
    ],
)  # fmt: skip
def test_bad_model_contents_are_one_line_errors(tmp_path, tiny_model, name, payload, message):
    raw = torch.load(tiny_model, weights_only=True)
    if payload == "nan":
        raw["state_dict"]["res1.conv1.conv2d.weight"][0, 0, 0, 0] = float("nan")
    elif payload == "args":
        raw["model_args"] = [4, 8, 8]
    else:
        raw["state_dict"] = list(raw["state_dict"].values())
    torch.save(raw, tmp_path / name)
    src = write_photo(tmp_path / "in.png")
    rc, err = _main("--model", tmp_path / name, "--input", src, "--output", tmp_path / "o.png")
    assert rc == 2 and err == f"error: {tmp_path / name}: {message}" + (
        ": the model would give black images (training diverged?)\n" if payload == "nan" else "\n"
    )
    assert not (tmp_path / "o.png").exists()
