"""Screenshot of the web app with real models, for docs/app.png; and the app's browser helpers.

Starts the app (``transformer_net/app.py``) on a free localhost port, opens it
in headless Chromium (Debian's ``chromium`` and ``chromium-driver``: the
browser download that Playwright and Selenium Manager would do is not
available offline), stylizes a photo and saves the page. ``tests/test_app.py``
drives the browser with the same helpers.

  python scripts/app_screenshot.py --models outputs/presets \\
      --photo ../shared/images/content/chicago.jpg --output docs/app.png
"""

from __future__ import annotations

import argparse
import io
import shutil
import socket
import sys
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WAIT_S = 120  # a first ONNX export of a model on a busy 2-core machine takes seconds


def find_chromium() -> tuple[str, str] | str:
    """(browser, chromedriver) paths, or why there are none (a sentence)."""
    browser = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    driver = shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    pairs = (("Chromium", browser), ("chromedriver", driver))
    missing = [what for what, found in pairs if not found]
    return (
        f"no {' and no '.join(missing)} on PATH (looked for {', '.join(BROWSERS)}, "
        "chromedriver; Debian: apt-get install chromium chromium-driver)"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_browser(browser: str, driver: str, *, width: int = 1400, height: int = 1000):
    """Headless Chromium under Selenium, at ``browser`` with ``driver`` (no download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in containers
        "--disable-dev-shm-usage",  # small /dev/shm in containers
        "--disable-gpu",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def upload(page, elem_id: str, path: Path, *, timeout: float = WAIT_S) -> None:
    """Give ``path`` to the file input of the image component ``elem_id``, once it is there
    (the page is built by JavaScript after it loads)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    where = (By.CSS_SELECTOR, f"#{elem_id} input[type=file]")
    WebDriverWait(page, timeout).until(expected_conditions.presence_of_element_located(where))
    page.find_element(*where).send_keys(str(path))


def image_size(page, elem_id: str, *, timeout: float = WAIT_S) -> tuple[int, int]:
    """The natural (width, height) of the image shown in component ``elem_id``, once loaded."""
    from selenium.webdriver.support.ui import WebDriverWait

    script = (
        f"const img = document.querySelector('#{elem_id} img');"
        "return img && img.complete && img.naturalWidth ? [img.naturalWidth, img.naturalHeight]"
        " : null;"
    )
    return tuple(WebDriverWait(page, timeout).until(lambda p: p.execute_script(script)))


def wait_for_text(page, text: str, *, timeout: float = WAIT_S) -> str:
    """The page's visible text once it contains ``text``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def body_with_text(p) -> str | None:
        body = p.find_element(By.TAG_NAME, "body").text
        return body if text in body else None

    return WebDriverWait(page, timeout).until(body_with_text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", required=True, help="model files or folders")
    p.add_argument("--photo", required=True, help="the photo to stylize")
    p.add_argument("--model-index", type=int, default=0, help="which model of the gallery")
    p.add_argument("--output", default="docs/app.png", help="the screenshot (PNG)")
    args = p.parse_args(argv)
    found = find_chromium()
    if isinstance(found, str):
        print(f"error: {found}", file=sys.stderr)
        return 1
    from PIL import Image
    from selenium.webdriver.common.by import By

    from transformer_net.app import build_app, launch
    from transformer_net.catalog import describe_all, find_models

    infos, _ = describe_all(find_models(args.models))
    page = build_app(infos)
    url = launch(page, port=free_port())
    browser = start_browser(*found, height=1400)  # down to the results
    try:
        browser.get(url)
        upload(browser, "photo", Path(args.photo))
        wait_for_text(browser, "ready.")
        browser.find_elements(By.CSS_SELECTOR, "#gallery button.thumbnail-item")[
            args.model_index
        ].click()
        browser.find_element(By.ID, "stylize").click()
        image_size(browser, "result")
        wait_for_text(browser, " s")  # the status line: "... in 0.12 s"
        shot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
    finally:
        browser.quit()
        page.close()
    # 256 colours: a third of the bytes, and the page's flat colours stay exact.
    shot.quantize(256, dither=Image.Dither.FLOYDSTEINBERG).save(args.output, optimize=True)
    print(f"{args.output}: written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
