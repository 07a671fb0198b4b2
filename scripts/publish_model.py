"""Upload a model folder to the Hugging Face Hub, so anyone can load it with hf://user/name.

The folder is the one training writes (<output_dir>/model) or that
``scripts/export_model.py --format folder`` makes: it is checked to be complete
first (the files its config.json lists, weights that load), then the repository
is created if needed and exactly those files are uploaded in one commit. The
token is huggingface_hub's usual one (``hf auth login``, or HF_TOKEN). Needs the
``hub`` extra: pip install "transformer-net[hub]". See docs/sharing.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from transformer_net.checkpoint import read_model_file
from transformer_net.errors import ConfigError, TransformerNetError, first_line
from transformer_net.hub import import_hub
from transformer_net.model_folder import listed_files, missing_files

EPILOG = """\
examples:
  python scripts/publish_model.py outputs/wave/model --repo alice/wave-style
  python scripts/publish_model.py wave-model --repo alice/wave-style --private
  python scripts/publish_model.py wave-model --repo alice/wave-style --revision v2 \\
      --commit-message "3,000 more steps"
then: python stylize.py --model hf://alice/wave-style --input photo.jpg --output out.jpg
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="publish_model.py",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("folder", help="a model folder (config.json, model.safetensors, README.md)")
    parser.add_argument("--repo", required=True, help="the Hub repository: user/name (or org/name)")
    parser.add_argument(
        "--private", action="store_true", help="create the repository private (a new one only)"
    )
    parser.add_argument(
        "--revision", default=None, help="branch to commit to (created if needed; default: main)"
    )
    parser.add_argument("--commit-message", default=None, help="the commit's message")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return publish(args)
    except TransformerNetError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


def check_folder(folder: Path) -> list[str]:
    """The files to upload (config.json's list); ConfigError naming what is wrong."""
    if not folder.is_dir():
        raise ConfigError(
            f"{folder}: not a folder (a model folder from train.py or export_model.py)"
        )
    missing = missing_files(folder)
    if missing:
        raise ConfigError(
            f"{folder}: not a complete model folder: {', '.join(missing)} missing (make one with "
            "scripts/export_model.py MODEL FOLDER --format folder)"
        )
    read_model_file(folder)  # the weights load (ModelFileError naming the file otherwise)
    return listed_files(folder)


def publish(args: argparse.Namespace) -> int:
    """Check the folder, create the repository, upload the listed files; print the URL."""
    from transformer_net.hub import PREFIX, parse_hub_path

    folder = Path(args.folder)
    files = check_folder(folder)
    repo_id, _ = parse_hub_path(PREFIX + args.repo)  # the same rule as loading
    if "/" not in repo_id:
        raise ConfigError(f"--repo {args.repo}: expected user/name")
    hub = import_hub("publish_model.py", ConfigError)
    api = hub.HfApi()
    try:
        url = api.create_repo(repo_id, private=args.private, exist_ok=True)
        if args.revision:
            api.create_branch(repo_id, branch=args.revision, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            allow_patterns=files,  # exactly the folder's listed files, nothing else in it
            revision=args.revision,
            commit_message=args.commit_message or f"Upload {folder.name} with transformer-net",
        )
    except Exception as e:  # the library's HTTP errors, its HTTP client's (vary by version)
        # 401/403: no token or no write access; anything else: the Hub or the network.
        hint = " (log in with `hf auth login` or set HF_TOKEN)" if _auth(e) else ""
        print(f"error: {args.repo}: upload failed: {first_line(e)}{hint}", file=sys.stderr)
        return 1  # failed work, not bad usage
    print(f"uploaded {len(files)} files ({', '.join(files)}) to {url}")
    print(
        f"load it with: python stylize.py --model {PREFIX}{repo_id} --input photo.jpg "
        "--output out.jpg"
    )
    return 0


def _auth(error: Exception) -> bool:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None) in (401, 403) or "token" in str(error).lower()


if __name__ == "__main__":
    sys.exit(main())
