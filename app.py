"""The web app: ``python app.py --models outputs/``, then open http://127.0.0.1:7860.

A gallery of the models under the given folders; a photo (upload, clipboard,
webcam) stylized by one of them, by all of them ("All styles") or by Gatys
optimization (docs/app.md). This file parses the command line and checks that
the ``app`` extra (Gradio) is installed; ``transformer_net/app.py`` is the page.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

from transformer_net.errors import TransformerNetError, first_line
from transformer_net.stylize_cli import OneLineParser, at_least_1, thread_count

INSTALL_HINT = 'the web app needs Gradio: pip install -e ".[app]"'
TORCHSCRIPT_SKIPPED = (
    "a TorchScript file runs code when loaded; the app loads none "
    "(export the .pth as .onnx or a model folder)"
)
# The page's advice when Gatys cannot download VGG-16: the app has one such option.
VGG_HINT = "start app.py with --vgg-weights /path/vgg16.pth"
EXAMPLES = """\
examples:
  python app.py --models outputs/                       # every model under outputs/
  python app.py --models outputs/wave/wave.pth candy.onnx
  python app.py --models outputs/ --device cuda --port 8080
  python app.py --models outputs/ --vgg-weights ../shared/vgg16/vgg16_caffe_to_relu4_3.pth
  python app.py --models outputs/ --host 0.0.0.0   # open to the network: see docs/app.md
"""


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="app.py",
        description="Stylize photos in the browser with the models under the given folders.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--models",
        nargs="+",
        required=True,
        metavar="PATH",
        help="model files (.pth, .onnx) and model folders, and folders searched for them",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=_port, default=7860, help="port (7860)")
    p.add_argument("--device", default="auto", help="auto (GPU if available), cpu, cuda, mps")
    p.add_argument("--threads", type=thread_count, default=None, help="CPU threads (one per core)")
    p.add_argument(
        "--vgg-weights",
        default="caffe",
        help="loss network of Gatys optimization: caffe (downloaded once) or a .pth file",
    )
    p.add_argument("--max-upload-mb", type=at_least_1, default=50, help="largest upload in MB (50)")
    p.add_argument(
        "--max-megapixels",
        type=at_least_1,
        default=40,
        help="largest photo and result in megapixels (40)",
    )
    return p


def _port(text: str) -> int:
    value = at_least_1(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be 1-65535, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a one-line argument error (2)
        return int(e.code or 0)
    if importlib.util.find_spec("gradio") is None:
        print(f"error: {INSTALL_HINT}", file=sys.stderr)
        return 2
    from transformer_net.app import build_app, launch  # imports Gradio: seconds
    from transformer_net.catalog import describe_all, find_models

    try:
        infos, skipped = describe_all(find_models(args.models))
        # TorchScript files run code when loaded (runners.TorchScriptStylizer). The app
        # picks models up from folders by itself, so it loads none and has no option to:
        # trusting a folder is not trusting a file (stylize.py --trust-torchscript is).
        skipped += [(i.path, TORCHSCRIPT_SKIPPED) for i in infos if i.kind == "torchscript"]
        infos = [i for i in infos if i.kind != "torchscript"]
        for path, reason in skipped:
            print(f"note: {path}: not shown ({first_line(reason)})", file=sys.stderr)
        if not infos:
            print(
                f"error: --models {' '.join(args.models)}: no model found "
                "(.pth, .onnx or model folders)",
                file=sys.stderr,
            )
            return 2
        page = build_app(
            infos,
            device=args.device,
            threads=args.threads,
            vgg_weights=args.vgg_weights,
            max_megapixels=args.max_megapixels,
            vgg_hint=VGG_HINT,
        )
    except TransformerNetError as e:
        print(f"error: {first_line(e)}", file=sys.stderr)
        return e.exit_code
    try:
        url = launch(page, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb)
    except OSError as e:  # the port is taken, or the address is not this machine's
        print(f"error: --host {args.host} --port {args.port}: {first_line(e)}", file=sys.stderr)
        return 1
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: --host {args.host}: anyone who can reach this machine can use the app")
    print(f"{len(infos)} model(s) at {url} (Ctrl-C stops)")
    page.block_thread()  # until Ctrl-C
    return 0


if __name__ == "__main__":
    sys.exit(main())
