"""The project's own errors: the only exceptions the CLIs turn into one-line messages.

Every failure caused by the user's input (a missing file, a bad option value,
an unreadable model, no network for a download) raises a subclass of
:class:`TransformerNetError` whose message names the file or option and the
problem. Anything else (a bare ``ValueError`` or ``RuntimeError``) is a bug and
keeps its traceback. The older base classes (``ValueError``, ``RuntimeError``,
``OSError``) stay as second bases, so code that caught those still does.
"""

from __future__ import annotations

import errno


class TransformerNetError(Exception):
    """Base of the project's errors. ``exit_code``: 2 bad usage/input, 1 failed work."""

    exit_code = 2


class ConfigError(TransformerNetError, ValueError):
    """An option or config value is out of range or inconsistent; names the option."""


class ImageError(TransformerNetError, ValueError):
    """An image file could not be read or written; the message names the file."""


class ImageWriteError(ImageError):
    """An image could not be written (no permission, a full disk): failed work."""

    exit_code = 1


class VideoError(TransformerNetError, ValueError):
    """A video could not be read or written; the message names the file."""


class DataError(TransformerNetError, ValueError):
    """The training data is missing or unusable; the message names the folder."""


class ModelFileError(TransformerNetError, ValueError):
    """A model file is missing, unreadable or not a TransformerNet; names the file."""


class UntrustedModelError(ModelFileError):
    """A model file that runs code when loaded (TorchScript), refused unless its caller
    trusts it; the CLIs add the option that does (``stylize.py --trust-torchscript``)."""


class RunFolderError(TransformerNetError, ValueError):
    """The run folder or the checkpoint to resume from cannot be used as asked."""


class InputError(TransformerNetError, ValueError):
    """Inputs of a run are missing; the one-line message names them all."""


class VGGWeightsError(TransformerNetError, RuntimeError):
    """The VGG-16 weights could not be found, downloaded or read."""


class NonFiniteLossError(TransformerNetError, RuntimeError):
    """The training loss (or the trained weights) became NaN or infinite; names the step."""


class DownloadError(TransformerNetError, RuntimeError):
    """A download or extraction failed; the one-line message names the URL or file.

    ``network`` is True when the server could not be reached or the connection
    broke (offline, DNS failure, timeout), as opposed to an answer such as HTTP
    404 or a local problem such as a full disk: other downloads would fail too.
    """

    def __init__(self, message: str, *, network: bool = False) -> None:
        super().__init__(message)
        self.network = network


class OutputExistsError(TransformerNetError):
    """An output appeared under its name while the result was being made (another run
    writing the same folder): it is kept, and this result is not written."""

    exit_code = 1  # failed work (in a folder run: skipped), not bad usage


class DiskFullError(TransformerNetError, OSError):
    """No space left for a write; names the folder, the space needed and what was kept."""

    exit_code = 1  # failed work, not bad usage

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.strerror)


def first_line(error: BaseException | str, *, limit: int = 200) -> str:
    """The first line of an error message, spaces normalized, at most ``limit`` characters.

    Library errors (PyTorch's load errors, FFmpeg's) can span pages; a one-line
    message keeps only their reason. An ``OSError`` (FFmpeg's too) gives its
    ``strerror``, without the errno and the file name, which callers name themselves.
    """
    text = (getattr(error, "strerror", None) or str(error)).strip()
    line = " ".join(text.splitlines()[0].split()) if text else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."
