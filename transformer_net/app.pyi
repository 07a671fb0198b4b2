"""The web app: a gallery of trained models, and a photo stylized by them in the browser.

``app.py --models outputs/`` (the command, top level) finds the models with
``catalog.py`` and calls :func:`build_app` and :func:`launch`. Gradio gives the
page what a browser app needs and this project should not write itself: photo
input from a file, the clipboard or the webcam, a request queue (a long job of
one visitor never freezes another's page) and cancellation. The computing is
the library's, as in ``stylize.py``: ``runners.open_stylizer`` on the CPU or a
GPU, ``image.load_image`` for the size, ``color.postprocess`` for strength and
colour preservation, the style index or mix of multi-style models,
``contact_sheet.sheet_tiles`` for "All styles" (the sheet of ``stylize.py
sheet``) and ``optimize.GatysStylizer`` for Gatys optimization.

Security (docs/app.md): the server binds to 127.0.0.1 unless told otherwise,
and serves no file of this machine: the thumbnails, photos and results it shows
are images it makes in memory, which Gradio writes to its own cache folder
(``allowed_paths`` stays empty, so not even the model files can be fetched).
Uploads are decoded here, not by Gradio, with limits on bytes (Gradio's
``max_file_size``), pixels and frames, and every refusal is one line in the page.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Before Gradio is imported: it must not phone home (version check, usage analytics).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402 - after the environment above
import torch  # noqa: E402
from PIL import Image, ImageDraw, UnidentifiedImageError  # noqa: E402

from .catalog import ModelInfo, unique_labels  # noqa: E402
from .color import postprocess  # noqa: E402
from .contact_sheet import contact_sheet, sheet_tiles, stylized_tiles  # noqa: E402
from .errors import ConfigError, ImageError, TransformerNetError, first_line  # noqa: E402
from .image import ImageBytes, load_image, pil_to_tensor, resized_size, tensor_to_pil  # noqa: E402
from .inference import Stylizer, default_threads  # noqa: E402
from .optimize import Cancelled, GatysStylizer  # noqa: E402
from .runners import open_stylizer  # noqa: E402

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_UPLOAD_MB = 50  # a 12000x9000 JPEG is about 30 MB
DEFAULT_MEGAPIXELS = 40  # per upload and per result: bounds a request's memory and time
MAX_SIZE = 4096  # the Size slider's end: larger results take minutes on a CPU
SHEET_SIZE = 512  # "All styles" tiles when Size is 0: stylize.py sheet's default
MAX_ITERATIONS = 1000  # of Gatys optimization: the slider's end
GATYS_REPORT_EVERY = 5  # evaluations between progress lines (and cancellation checks)
CACHED_MODELS = 4  # stylizers kept open between requests
# System fonts: Gradio's default theme would make the browser fetch Google Fonts.
THEME = gr.themes.Default(
    font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
)
MODEL_STYLE = "the selected model's style image"
UPLOADED_STYLE = "a style image I upload"

@dataclass(frozen=True)
class Upload:
    """An uploaded image: its bytes, and its file name on the visitor's side (for messages)."""

    name: str
    data: bytes

def upload_from(payload: dict | None) -> Upload | None:
    """The image an event received as Gradio sent it (``preprocess=False``), undecoded.

    Gradio's own decoding would answer a non-image with a bare "Error";
    :func:`read_upload` words each refusal instead. Gradio has checked that the
    file is one of its uploads (never a path the page sent); checked again here,
    so that no Gradio version can make a handler read another file.
    """
    if not payload:
        return None
    name = Path(payload.get("orig_name") or "photo").name
    path, url = payload.get("path"), payload.get("url") or ""
    if path:
        cache = Path(gr.utils.get_upload_folder()).resolve()
        if not Path(path).resolve().is_relative_to(cache):
            raise ImageError(f"{name}: not an upload")
        return Upload(name, Path(path).read_bytes())
    if url.startswith("data:") and "," in url:  # API clients may send base64
        try:
            return Upload(name, base64.b64decode(url.split(",", 1)[1], validate=True))
        except binascii.Error:
            raise ImageError(f"{name}: its data URL is not base64") from None
    raise ImageError(f"{name}: the upload holds no image")

def read_upload(upload: Upload | None, *, size: int, max_megapixels: float) -> torch.Tensor:
    """The uploaded photo as (3, H, W) uint8, its longer side resized to ``size`` (0: as is).

    Each refusal is an :class:`ImageError` naming the file as the visitor knows
    it: not an image, animated, more pixels than ``max_megapixels`` (uploaded or
    after resizing), or undecodable.
    """
    if upload is None:
        raise ImageError("no photo yet: upload one, paste one or take one with the webcam")
    data, name = upload.data, upload.name
    limit = int(max_megapixels * 1_000_000)
    try:  # the header only: sizes and frames are known before anything is decoded
        with Image.open(io.BytesIO(data)) as img:
            (w, h), frames = img.size, getattr(img, "n_frames", 1)
    except UnidentifiedImageError:
        what = "an empty file" if not data else "not an image (use a JPEG, PNG or WebP photo)"
        raise ImageError(f"{name}: {what}") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: too many pixels (limit {max_megapixels:g} MP)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: cannot read this image ({first_line(e)})") from None
    if frames > 1:
        raise ImageError(f"{name}: animated image ({frames} frames): upload a still photo")
    if w * h > limit:
        raise ImageError(
            f"{name}: {w}x{h} is {w * h / 1e6:.0f} MP, over this app's limit of "
            f"{max_megapixels:g} MP (app.py --max-megapixels)"
        )
    if size:
        new_w, new_h = resized_size((w, h), max_side=size)
        if new_w * new_h > limit:
            raise ConfigError(
                f"Size {size}: {name} would become {new_w}x{new_h}, over this app's limit "
                f"of {max_megapixels:g} MP"
            )
    return load_image(ImageBytes(data, name=name), max_side=size or None)

@contextmanager
def _shown_in_page() -> Iterator[None]:
    """The project's errors as one line in the page (a toast); anything else is a bug,
    which Gradio logs here and shows as a bare "Error" (``show_error=False``)."""
    try:
        yield
    except TransformerNetError as e:
        raise gr.Error(first_line(e, limit=300), print_exception=False) from None

class _Stylizers:
    """The last few stylizers opened, shared by all requests (opening one costs a file
    read, and for a PyTorch file on the CPU an ONNX export the first time)."""

    def __init__(self, *, device: str, threads: int):
        self.device, self.threads = device, threads
        self.open: OrderedDict[tuple, Stylizer] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, path: Path, style: int | list[float] | None) -> Stylizer:
        key = (str(path), tuple(style) if isinstance(style, list) else style)
        with self.lock:  # one request opens a model; others wanting it wait for it
            if key not in self.open:
                options = {} if style is None else {"style": style}
                self.open[key] = open_stylizer(
                    path, device=self.device, threads=self.threads, **options
                )
                while len(self.open) > CACHED_MODELS:
                    self.open.popitem(last=False)
            self.open.move_to_end(key)
            return self.open[key]

def run_gatys(
    image: torch.Tensor,
    style: torch.Tensor,
    *,
    stop: threading.Event,
    device: str,
    vgg_weights: str,
    iterations: int,
    preserve_color: bool,
) -> Iterator[tuple[str, Any]]:
    """Gatys optimization of ``image`` toward ``style`` in a thread, as a stream of events.

    Yields ``("progress", (iteration, losses))`` while it runs, then
    ``("done", (3, H, W) uint8)`` (before color post-processing), or
    ``("cancelled", iteration)`` once ``stop`` is set: the optimization checks
    it every ``GATYS_REPORT_EVERY`` evaluations. Its errors are raised here.
    """
    events: queue.Queue = queue.Queue()
    reached = 0

    def report(iteration: int, losses: dict[str, float]) -> None:
        if stop.is_set():
            raise Cancelled()
        events.put(("progress", (iteration, losses)))

    def work() -> None:
        try:
            stylizer = GatysStylizer(
                style,
                device=device,
                vgg_weights=vgg_weights,
                iterations=iterations,
                preserve_color=preserve_color,
                progress=report,
                report_every=GATYS_REPORT_EVERY,
            )
            events.put(("done", stylizer(image)))
        except Cancelled:
            events.put(("cancelled", None))
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread, raised there
            events.put(("error", e))

    threading.Thread(target=work, name="gatys", daemon=True).start()
    try:
        while True:
            kind, value = events.get()
            if kind == "error":
                raise value
            if kind == "progress":
                reached = value[0]
            yield (kind, reached if kind == "cancelled" else value)
            if kind in ("done", "cancelled"):
                return
    finally:
        stop.set()  # the caller went away (page closed, cancelled): the thread stops too

class NumberSlider(gr.Slider):
    """``gr.Slider`` whose value, as a request sends it, must be a finite number.

    The page's slider sends one, but the app's API takes any JSON value: Gradio's own
    check of a string (``"abc" < 0``) is a TypeError, shown as a bare "Error". Here it
    is one line naming the slider. ``is_template``: the page draws Gradio's slider.
    """

    is_template = True

    def preprocess(self, payload: Any) -> float:
        ok = isinstance(payload, int | float) and not isinstance(payload, bool)
        if not ok or not math.isfinite(payload):
            name = (self.label or "value").split(" (")[0].split(":")[0]
            raise gr.Error(
                f"{name}: expected a number from {self.minimum:g} to {self.maximum:g}, "
                f"got {_short(payload)}",
                print_exception=False,
            )
        return super().preprocess(payload)
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component

def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

def _placeholder(text: str, side: int = 128) -> torch.Tensor:
    """A gray square saying ``text``: the gallery tile of a model without a style image."""
    img = Image.new("RGB", (side, side), (200, 200, 200))
    ImageDraw.Draw(img).text((8, side // 2 - 6), text, fill="black")
    return pil_to_tensor(img)

def gallery_image(info: ModelInfo) -> Image.Image:
    """A model's tile: its painting, or for a multi-style model its paintings, labelled."""
    thumbs = [t if t is not None else _placeholder("no style image") for t in info.thumbnails]
    if info.num_styles == 1:
        return tensor_to_pil(thumbs[0])
    return contact_sheet(list(zip(info.style_names, thumbs, strict=True)), height=128, columns=2)

class _App:
    """The handlers, and what they share: the models, the open stylizers, the stop flags."""

    def __init__(
        self,
        infos: Sequence[ModelInfo],
        *,
        device: str,
        threads: int,
        vgg_weights: str,
        max_megapixels: float,
    ):
        self.infos, self.labels = list(infos), unique_labels(infos)
        self.device, self.vgg_weights, self.max_megapixels = device, vgg_weights, max_megapixels
        self.stylizers = _Stylizers(device=device, threads=threads)
        self.stops: dict[str, threading.Event] = {}  # session -> its Gatys run's stop flag

    def photo(self, upload: Upload | None, size: float) -> torch.Tensor:
        return read_upload(upload, size=int(size), max_megapixels=self.max_megapixels)

    def check_upload(self, payload: dict | None) -> str:
        with _shown_in_page():
            upload = upload_from(payload)
            image = self.photo(upload, 0)
        return f"{upload.name}: {image.shape[2]}x{image.shape[1]}, ready."

    def info(self, index: int | None) -> ModelInfo:
        if index is None or not 0 <= int(index) < len(self.infos):
            raise ConfigError("choose a model first (click one in the gallery)")
        return self.infos[int(index)]

    def style_controls(self, index: int | None, mix: bool) -> list:
        """The style radio and one slider per style, for the model at ``index``."""
        info = self.infos[int(index or 0)]
        multi = info.num_styles > 1
        radio = gr.update(
            choices=[(name, k) for k, name in enumerate(info.style_names)],
            value=0,
            visible=multi and not mix,
        )
        sliders = [
            gr.update(visible=multi and mix and k < info.num_styles, label=name)
            for k, name in enumerate(info.style_names + [""] * (self.max_styles - info.num_styles))
        ]
        return [radio, gr.update(visible=multi), *sliders]

    @property
    def max_styles(self) -> int:
        most = max(info.num_styles for info in self.infos)
        return most if most > 1 else 0

    def style(self, info: ModelInfo, index: int | None, mix: bool, weights) -> Any:
        """The ``style`` option of ``open_stylizer``, as ``--style-index``/``--style-mix``."""
        if info.num_styles == 1:
            return None
        if mix:
            return [float(w) for w in weights[: info.num_styles]]
        return int(index or 0)

    def stylize(self, photo, index, size, strength, preserve, style_index, mix, *weights):
        with _shown_in_page():
            info = self.info(index)
            image = self.photo(upload_from(photo), size)
            style = self.style(info, style_index, mix, weights)
            stylizer = self.stylizers.get(info.path, style)
            result, seconds = stylizer.timed(image)
            result = postprocess(image, result, strength=strength, preserve_color=preserve)
        h, w = result.shape[1:]
        status = (
            f"**{self.labels[int(index)]}**{_style_note(info, style)} "
            f"({stylizer.runtime} on {stylizer.device}): {w}x{h} in {seconds:.2f} s"
        )
        return tensor_to_pil(image), tensor_to_pil(result), status

    def sheet(self, payload, size, strength, preserve, progress=gr.Progress()):  # noqa: B008 - Gradio's idiom
        """The photo through every model (every style): ``stylize.py sheet``'s tiles."""
        with _shown_in_page():
            upload = upload_from(payload)
            photo = self.photo(upload, size or SHEET_SIZE)
        panels, failed = [(upload.name, photo)], []
        total = len(sheet_tiles(self.infos))
        progress((0, total))
        tiles = stylized_tiles(
            photo, self.infos, self.stylizers.get, strength=strength, preserve_color=preserve
        )
        for n, tile in enumerate(tiles, start=1):
            progress((n, total), desc=tile.label)
            if tile.error is None:
                panels.append((tile.label, tile.image))
            else:  # the others still make a sheet, as in the CLI
                failed.append(f"{tile.label}: {tile.error}")
        if len(panels) == 1:
            raise gr.Error("no model could stylize the photo: " + "; ".join(failed))
        status = f"All styles: {len(panels) - 1} tile(s)"
        if failed:
            status += "; failed: " + "; ".join(failed)
        sheet = contact_sheet(panels, height=photo.shape[1])
        return gr.update(value=sheet, visible=True), status

    def gatys(
        self,
        photo,
        index,
        size,
        strength,
        preserve,
        style_index,
        source,
        style_photo,
        iterations,
        request: gr.Request,
        progress=gr.Progress(),  # noqa: B008 - Gradio's idiom
    ):
        """Gatys optimization, yielding a status line per report; the Cancel button stops it."""
        with _shown_in_page():
            image = self.photo(upload_from(photo), size)
            if not 1 <= int(iterations) <= MAX_ITERATIONS:
                raise ConfigError(f"iterations must be 1-{MAX_ITERATIONS}, got {iterations}")
            if source == UPLOADED_STYLE:
                if not style_photo:
                    raise ConfigError("no style image yet: upload one, or use the model's")
                style = self.photo(upload_from(style_photo), 0)
            else:
                info = self.info(index)
                k = int(style_index or 0) if info.num_styles > 1 else 0
                style = info.thumbnails[k]
                if style is None:
                    raise ConfigError(
                        f"{self.labels[int(index)]}: its file has no style image; upload one"
                    )
        stop = threading.Event()
        self.stops[request.session_hash] = stop
        start = time.perf_counter()
        yield gr.skip(), gr.skip(), "Gatys optimization: loading VGG-16..."
        try:
            with _shown_in_page():
                for kind, value in run_gatys(
                    image,
                    style,
                    stop=stop,
                    device=self.device,
                    vgg_weights=self.vgg_weights,
                    iterations=int(iterations),
                    preserve_color=preserve,
                ):
                    seconds = time.perf_counter() - start
                    if kind == "progress":
                        i, losses = value
                        progress((i, int(iterations)), desc="Gatys optimization")
                        yield (
                            gr.skip(),
                            gr.skip(),
                            f"Gatys optimization: iteration {i}/{int(iterations)}, "
                            f"loss {losses['total']:.4g} ({seconds:.0f} s)",
                        )
                    elif kind == "cancelled":
                        yield gr.skip(), gr.skip(), f"Cancelled after {value} iterations."
                    else:
                        result = postprocess(
                            image, value, strength=strength, preserve_color=preserve
                        )
                        yield (
                            tensor_to_pil(image),
                            tensor_to_pil(result),
                            f"Gatys optimization: {int(iterations)} iterations in {seconds:.0f} s",
                        )
        finally:
            if self.stops.get(request.session_hash) is stop:
                del self.stops[request.session_hash]

    def cancel(self, request: gr.Request) -> str:
        stop = self.stops.get(request.session_hash)
        if stop is None:
            return "Nothing to cancel."
        stop.set()
        return "Cancelled."

def build_app(
    models: Sequence[ModelInfo],
    *,
    device: str = "auto",
    threads: int | None = None,
    vgg_weights: str = "caffe",
    max_megapixels: float = DEFAULT_MEGAPIXELS,
) -> gr.Blocks:
    """The page for ``models`` (``catalog.describe_all``), ready for :func:`launch`.

    ``device``/``threads`` as in ``stylize.py``; ``vgg_weights`` is the loss
    network of Gatys optimization (``caffe`` downloads Johnson et al.'s once,
    or a ``.pth`` file); ``max_megapixels`` caps uploads and results.
    """
    if not models:
        raise ConfigError("no models to show")
    threads = threads or default_threads()
    torch.set_num_threads(threads)  # PyTorch's are process-wide (onnxruntime's: per model)
    app = _App(
        models,
        device=device,
        threads=threads,
        vgg_weights=vgg_weights,
        max_megapixels=max_megapixels,
    )
    first = app.infos[0]
    with gr.Blocks(
        title="transformer-net", analytics_enabled=False, delete_cache=(3600, 3600)
    ) as page:
        gr.Markdown(
            "# transformer-net: fast neural style transfer\n"
            f"{len(app.infos)} model(s). Choose one in the gallery, give a photo, **Stylize**."
        )
        with gr.Row():
            with gr.Column(scale=1):
                photo = gr.Image(
                    label="Photo (upload, paste or webcam)",
                    sources=["upload", "clipboard", "webcam"],
                    type="filepath",
                    elem_id="photo",
                    height=320,
                )
                model = gr.Dropdown(
                    choices=[(label, k) for k, label in enumerate(app.labels)],
                    value=0,
                    label="Model",
                    elem_id="model",
                )
                size = NumberSlider(
                    0, MAX_SIZE, value=0, step=1, label="Size: longer side in pixels (0: as given)"
                )
                strength = NumberSlider(
                    0, 1, value=1, step=0.05, label="Strength (0: the photo, 1: the style)"
                )
                preserve = gr.Checkbox(label="Preserve the photo's colours")
                radio, mix, *sliders = _style_inputs(app, first)
                with gr.Row():
                    run = gr.Button("Stylize", variant="primary", elem_id="stylize")
                    everything = gr.Button("All styles", elem_id="all-styles")
            with gr.Column(scale=1):
                gallery = gr.Gallery(
                    value=[
                        (gallery_image(info), label)
                        for info, label in zip(app.infos, app.labels, strict=True)
                    ],
                    label="Models (click one to use it)",
                    columns=3,
                    height=360,
                    allow_preview=False,
                    buttons=[],  # no "Download All": a tile is for choosing
                    elem_id="gallery",
                )
                with gr.Accordion("Gatys optimization (no trained model; slow)", open=False):
                    source = gr.Radio(
                        [MODEL_STYLE, UPLOADED_STYLE], value=MODEL_STYLE, label="Style"
                    )
                    style_upload = gr.Image(
                        label="Style image",
                        sources=["upload", "clipboard"],
                        type="filepath",
                        height=200,
                    )
                    iterations = NumberSlider(
                        10, MAX_ITERATIONS, value=100, step=10, label="Iterations"
                    )
                    with gr.Row():
                        optimize = gr.Button("Run Gatys optimization", elem_id="gatys")
                        cancel = gr.Button("Cancel", variant="stop", elem_id="cancel")
        status = gr.Markdown(elem_id="status")
        with gr.Row():
            before = gr.Image(
                label="Before",
                format="png",
                interactive=False,
                buttons=["fullscreen"],
                elem_id="before",
            )
            after = gr.Image(
                label="After (download: full size)",
                format="png",
                interactive=False,
                buttons=["download", "fullscreen"],
                elem_id="result",
            )
        sheet = gr.Image(
            label="All styles", format="png", interactive=False, visible=False, elem_id="sheet"
        )

        quick = {"concurrency_limit": None, "show_progress": "hidden"}  # no model runs
        # preprocess=False: the handlers decode the photos themselves (upload_from).
        photo.upload(app.check_upload, photo, status, preprocess=False, **quick)
        gallery.select(_selected, None, model, **quick)
        for trigger in (model.change, mix.change):
            trigger(app.style_controls, [model, mix], [radio, mix, *sliders], **quick)
        style = [radio, mix, *sliders]
        common = [photo, model, size, strength, preserve]
        # One queue for the models (one at a time: they share the CPU cores or
        # the GPU), another for Gatys: a minutes-long optimization never holds up
        # a stylization of another visitor, who sees the queue position meanwhile.
        models = {"concurrency_id": "models", "preprocess": False}
        run.click(app.stylize, common + style, [before, after, status], **models)
        everything.click(app.sheet, [photo, size, strength, preserve], [sheet, status], **models)
        job = optimize.click(
            app.gatys,
            common + [radio, source, style_upload, iterations],
            [before, after, status],
            concurrency_id="gatys",
            preprocess=False,
        )
        cancel.click(app.cancel, None, status, cancels=[job], **quick)
    page.queue(default_concurrency_limit=1, max_size=64)
    return page

def _style_note(info: ModelInfo, style: int | list[float] | None) -> str:
    """', style blue' or ', mix 0.5 red + 0.5 blue' (normalized) for a multi-style model."""
    if style is None:
        return ""
    if isinstance(style, int):
        return f", style {info.style_names[style]}"
    total = sum(style) or 1.0
    parts = [f"{w / total:.2g} {n}" for w, n in zip(style, info.style_names, strict=True) if w]
    return ", mix " + " + ".join(parts)

def _selected(event: gr.SelectData) -> int:
    """The model clicked in the gallery (Gradio passes the event by this annotation)."""
    return event.index

def _style_inputs(app: _App, first: ModelInfo) -> list:
    """Multi-style models: the style to use, or a mix with one weight (slider) per style."""
    multi = first.num_styles > 1
    radio = gr.Radio(
        [(name, k) for k, name in enumerate(first.style_names)],
        value=0,
        label="Style",
        visible=multi,
        elem_id="style-index",
    )
    mix = gr.Checkbox(label="Mix styles (one weight per style)", visible=multi)
    names = first.style_names + [f"style {k}" for k in range(first.num_styles, app.max_styles)]
    sliders = [
        NumberSlider(0, 1, value=1, step=0.05, label=names[k], visible=False)
        for k in range(app.max_styles)
    ]
    return [radio, mix, *sliders]

def launch(
    page: gr.Blocks,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    max_upload_mb: float = DEFAULT_UPLOAD_MB,
) -> str:
    """Serve ``page`` in a background thread; its URL. ``page.block_thread()`` waits.

    No share link, no server-side rendering (it needs Node), no MCP server, no
    run history, no file of this machine served (``allowed_paths=[]``); uploads over
    ``max_upload_mb`` are refused by Gradio with a message in the page. A port
    in use is an ``OSError`` from Gradio.
    """
    _, url, _ = page.launch(
        server_name=host,
        server_port=port,
        share=False,
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        enable_monitoring=False,
        run_history=False,  # its page offers to upload runs to a Hugging Face bucket
        allowed_paths=[],
        max_file_size=f"{max_upload_mb:g}mb",
        show_error=False,
        quiet=True,
        prevent_thread_lock=True,
        theme=THEME,
    )
    return url
