"""The web app: driven in a real headless Chromium, plus its command, refusals and file serving.

The browser test starts the app in-process on a free localhost port with two
tiny random-weight models (one single-style, one with two styles), uploads a
photo, stylizes it and reads the natural size of the image the page shows; a
non-image upload must show its one-line message. It needs Debian's
``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and skips,
saying so, only when they are not on PATH.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image

import app as app_command
from tests.conftest import load_script, write_photo
from transformer_net import app as web
from transformer_net.catalog import describe_all, find_models
from transformer_net.checkpoint import save_model_file
from transformer_net.errors import ConfigError, ImageError
from transformer_net.image import load_image, style_thumbnail
from transformer_net.model import TransformerNet

helpers = load_script("app_screenshot")


def run_app(argv: list[str], capsys) -> tuple[int, str, str]:
    code = app_command.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# --- the command -------------------------------------------------------------


def test_help_ends_with_examples(capsys):
    assert app_command.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1].startswith("  python app.py --models")
    assert "127.0.0.1" in out  # the default address is said


def test_without_gradio_it_says_how_to_install(monkeypatch, capsys):
    real = app_command.importlib.util.find_spec
    monkeypatch.setattr(
        app_command.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gradio" else real(name, *a),
    )
    code, _, err = run_app(["--models", "outputs"], capsys)
    assert code == 2
    assert err == 'error: the web app needs Gradio: pip install -e ".[app]"\n'


def test_model_folder_problems_are_one_line(tmp_path, capsys):
    code, _, err = run_app(["--models", str(tmp_path / "nowhere")], capsys)
    assert code == 2 and err.count("\n") == 1 and "nowhere: no such file or folder" in err
    (tmp_path / "notes.txt").write_text("no models here")
    code, _, err = run_app(["--models", str(tmp_path)], capsys)
    assert code == 2 and err.count("\n") == 1 and "no model found" in err


def test_bad_port_is_refused_by_the_parser(capsys):
    assert app_command.main(["--models", "outputs", "--port", "70000"]) == 2
    err = capsys.readouterr().err
    assert "--port: must be 1-65535, got 70000" in err and len(err.splitlines()) == 1


# --- uploads -----------------------------------------------------------------


def upload_of(path: Path) -> web.Upload:
    return web.Upload(path.name, path.read_bytes())


def test_handlers_read_gradio_uploads_only(tmp_path):
    import base64

    photo = write_photo(tmp_path / "photo.png", size=(8, 6))
    # A path the page sent instead of a file it uploaded: refused, never read.
    with pytest.raises(ImageError, match="^passwd: not an upload$"):
        web.upload_from({"path": "/etc/passwd", "orig_name": "passwd"})
    with pytest.raises(ImageError, match="^photo.png: not an upload$"):
        web.upload_from({"path": str(photo), "orig_name": "photo.png"})
    url = "data:image/png;base64," + base64.b64encode(photo.read_bytes()).decode()
    upload = web.upload_from({"url": url, "orig_name": "pasted.png"})
    assert upload == web.Upload("pasted.png", photo.read_bytes())
    assert web.upload_from(None) is None


def test_read_upload_resizes_like_stylize(tmp_path):
    photo = write_photo(tmp_path / "photo.png", size=(67, 45))
    assert web.read_upload(upload_of(photo), size=0, max_megapixels=1).shape == (3, 45, 67)
    resized = web.read_upload(upload_of(photo), size=30, max_megapixels=1)
    assert torch.equal(resized, load_image(photo, max_side=30))  # the CLI's --size 30


def test_read_upload_refusals_name_the_file(tmp_path):
    def refusal(path: Path, **limits) -> str:
        with pytest.raises((ImageError, ConfigError)) as e:
            web.read_upload(upload_of(path), **{"size": 0, "max_megapixels": 1, **limits})
        return str(e.value)

    text = tmp_path / "notes.jpg"
    text.write_text("a shopping list, not a photo")
    assert refusal(text) == "notes.jpg: not an image (use a JPEG, PNG or WebP photo)"
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert refusal(empty) == "empty.png: an empty file"
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert "anim.gif: animated image (2 frames)" in refusal(tmp_path / "anim.gif")
    big = tmp_path / "big.png"
    Image.new("RGB", (1200, 1000)).save(big)
    assert "big.png: 1200x1000 is 1 MP, over this app's limit of 1 MP" in refusal(big)
    small = write_photo(tmp_path / "small.png", size=(40, 30))
    assert "Size 2000: small.png would become 2000x1500" in refusal(small, size=2000)
    with pytest.raises(ImageError, match="no photo yet"):
        web.read_upload(None, size=0, max_megapixels=1)


# --- Gatys: progress and cancellation ----------------------------------------


def gatys_events(stop: threading.Event, iterations: int):
    torch.manual_seed(0)
    image = (torch.rand(3, 24, 32) * 255).to(torch.uint8)
    style = (torch.rand(3, 32, 32) * 255).to(torch.uint8)
    return web.run_gatys(
        image,
        style,
        stop=stop,
        device="cpu",
        vgg_weights="random",  # untrained VGG: no download, the same code path
        iterations=iterations,
        preserve_color=False,
    )


def test_gatys_reports_progress_then_the_result():
    events = list(gatys_events(threading.Event(), iterations=10))
    kinds = [kind for kind, _ in events]
    assert kinds == ["progress", "progress", "done"]
    assert [value[0] for kind, value in events if kind == "progress"] == [5, 10]
    assert events[-1][1].shape == (3, 24, 32) and events[-1][1].dtype == torch.uint8


def test_gatys_stops_when_cancelled():
    stop = threading.Event()
    events = gatys_events(stop, iterations=100_000)  # hours, unless the stop works
    assert next(events)[0] == "progress"
    stop.set()
    assert list(events) == [("cancelled", 5)]


# --- the served app ----------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """Two tiny random-weight models with style thumbnails, as training writes them."""
    root = tmp_path_factory.mktemp("models")
    painting = load_image(write_photo(root / "painting.png", size=(48, 40), seed=5))
    torch.manual_seed(0)
    single = TransformerNet(channels=(8, 16, 32), num_residual=1).eval()
    save_model_file(
        single,
        root / "one" / "tiny.pth",
        meta={"style": "tiny", "style_thumbnails": [style_thumbnail(painting)]},
    )
    multi = TransformerNet(channels=(8, 16, 32), num_residual=1, num_styles=2).eval()
    save_model_file(
        multi,
        root / "two" / "duo.pth",
        meta={"styles": ["red", "blue"], "style_thumbnails": [style_thumbnail(painting)] * 2},
    )
    (root / "painting.png").unlink()
    return root


@pytest.fixture(scope="module")
def server(models):
    infos, skipped = describe_all(find_models([models]))
    assert [i.name for i in infos] == ["tiny", "duo"] and not skipped
    page = web.build_app(infos, device="cpu", threads=1, max_megapixels=1)
    url = web.launch(page, host=web.DEFAULT_HOST, port=helpers.free_port(), max_upload_mb=1)
    yield url
    page.close()


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def test_serves_on_localhost_and_no_file_of_the_machine(server, models):
    assert server.startswith("http://127.0.0.1:")
    assert status_of(server) == 200
    repo_file = Path(app_command.__file__).resolve()  # in the working directory
    for path in ("/etc/passwd", models / "one" / "tiny.pth", repo_file, "/tmp/../etc/passwd"):
        assert status_of(f"{server}gradio_api/file={path}") == 403, path


@pytest.fixture(scope="module")
def browser():
    found = helpers.find_chromium()
    if isinstance(found, str):
        pytest.skip(f"the browser test needs Chromium: {found}")
    page = helpers.start_browser(*found)
    yield page
    page.quit()


def test_stylize_in_a_real_browser(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    photo = write_photo(tmp_path / "street.png", size=(67, 45))
    browser.get(server)
    helpers.upload(browser, "photo", photo)
    helpers.wait_for_text(browser, "street.png: 67x45, ready.")
    browser.find_element(By.ID, "stylize").click()
    assert helpers.image_size(browser, "result") == (67, 45)
    assert "tiny (" in browser.find_element(By.ID, "status").text  # model, runtime, device

    # duo, clicked in the gallery: its styles, then a mix of them with one slider each.
    browser.find_elements(By.CSS_SELECTOR, "#gallery button.thumbnail-item")[1].click()
    helpers.wait_for_text(browser, "blue")
    browser.find_element(By.XPATH, "//label[contains(., 'Mix styles')]").click()
    browser.find_element(By.ID, "stylize").click()
    helpers.wait_for_text(browser, "duo, mix 0.5 red + 0.5 blue")
    assert helpers.image_size(browser, "result") == (67, 45)

    # "All styles": the photo, tiny, and one tile per style of duo, in one row.
    browser.find_element(By.ID, "all-styles").click()
    helpers.wait_for_text(browser, "All styles: 3 tile(s)")
    width, height = helpers.image_size(browser, "sheet")
    assert width > 3 * height

    notes = tmp_path / "notes.jpg"
    notes.write_text("a shopping list, not a photo")
    helpers.upload(browser, "photo", notes)
    text = helpers.wait_for_text(browser, "notes.jpg: not an image")
    assert "Traceback" not in text
