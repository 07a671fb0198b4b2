"""``hf://user/name[@revision]``: model folders on the Hugging Face Hub, as local folders.

``stylize.py --model hf://user/name`` (and every loader, through
``checkpoint.resolve_model_path``) downloads the repository's files with
``huggingface_hub.snapshot_download`` into the library's own cache (``HF_HUB_CACHE``,
``HF_HOME``) and then reads the folder like any local model folder. With
``HF_HUB_OFFLINE=1`` only the cache is used: a model already downloaded loads,
one that is not fails with a message saying so.

``huggingface_hub`` is an optional extra (``pip install "transformer-net[hub]"``):
training, stylizing local files and writing model folders never need it, so it is
imported here only when an ``hf://`` path is given (and by ``scripts/publish_model.py``).
Every failure is one line naming the ``hf://`` path (:mod:`errors`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from .errors import ConfigError, DownloadError, ModelFileError, first_line

PREFIX = "hf://"
INSTALL_HINT = 'pip install "transformer-net[hub]"'
# A repository id as the Hub allows it (an optional namespace, then the name).
_REPO_ID = re.compile(r"(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*")
_TRUE = {"1", "on", "yes", "true"}


def is_hub_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a model on the Hub (``hf://...``) rather than a local file."""
    return isinstance(path, str) and path.startswith(PREFIX)


def parse_hub_path(path: str) -> tuple[str, str | None]:
    """``hf://user/name@rev`` -> ``("user/name", "rev")`` (revision None: the main branch)."""
    spec = path[len(PREFIX) :]
    repo_id, _, revision = spec.partition("@")
    if not _REPO_ID.fullmatch(repo_id) or ".." in repo_id or (_ and not revision):
        raise ConfigError(
            f"{path}: not a Hub model path; expected hf://user/name or hf://user/name@revision"
        )
    return repo_id, revision or None


def offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def import_hub(what: str, error: type[Exception] = ModelFileError) -> Any:
    """The ``huggingface_hub`` module, or ``error`` saying how to install it."""
    try:
        import huggingface_hub
    except ImportError:
        raise error(f"{what} needs huggingface_hub: {INSTALL_HINT}") from None
    return huggingface_hub


def download(path: str) -> Path:
    """The local folder holding the files of the Hub model ``path`` (``hf://user/name[@rev]``).

    Downloaded into (or found in) huggingface_hub's cache; with ``HF_HUB_OFFLINE=1``
    only found. Errors: ConfigError (a malformed path), ModelFileError (no such
    repository or revision, not cached while offline, extra not installed),
    DownloadError (the Hub could not be reached and the model is not cached).
    """
    repo_id, revision = parse_hub_path(path)
    hub = import_hub(f"{path}: loading a model from the Hugging Face Hub")
    from huggingface_hub import utils

    from . import __version__

    no_network = offline()
    try:
        folder = hub.snapshot_download(
            repo_id,
            revision=revision,
            local_files_only=no_network,
            library_name="transformer-net",
            library_version=__version__,
        )
    except utils.RevisionNotFoundError:
        raise ModelFileError(f"{path}: the repository has no revision {revision!r}") from None
    except utils.RepositoryNotFoundError:
        raise ModelFileError(
            f"{path}: no such model repository on the Hub (a private one needs a token: "
            "`hf auth login` or HF_TOKEN)"
        ) from None
    except utils.LocalEntryNotFoundError as e:
        if no_network:
            raise ModelFileError(
                f"{path}: not in the Hugging Face cache ({cache_dir()}) and HF_HUB_OFFLINE=1 "
                "forbids downloading it; run once online (or unset HF_HUB_OFFLINE)"
            ) from None
        reason = first_line(e.__cause__ or e)
        raise DownloadError(
            f"{path}: cannot download from the Hub and not in the cache ({reason})", network=True
        ) from None
    except utils.HfHubHTTPError as e:
        raise DownloadError(f"{path}: download failed ({first_line(e)})") from None
    except (OSError, ValueError) as e:  # an incomplete cached snapshot, an unwritable cache
        raise ModelFileError(f"{path}: {first_line(e)}") from None
    except Exception as e:  # the HTTP client's own errors (a proxy refusing, say)
        raise DownloadError(f"{path}: download failed ({first_line(e)})", network=True) from None
    return Path(folder)


def cache_dir() -> str:
    """Where huggingface_hub keeps downloaded repositories (for messages)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)
