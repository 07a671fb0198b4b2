"""What torch's weights-only loading refused, for the loaders' one-line errors.

Every file this project reads with ``torch.load`` (model files, checkpoints, VGG
weights) is loaded with ``weights_only=True``, so a file holding pickled Python
objects, which could run code, is refused by torch. Its error wording varies
across torch versions and ends with advice to retry with ``weights_only=False``,
which would run the code; :func:`refused_global` tells such a refusal from a
corrupt file and names the object, so that each loader can say so in one line.
"""

from __future__ import annotations

import pickletools
import re
import zipfile
from pathlib import Path


def refused_global(error: BaseException, path: Path) -> str | None:
    """The Python object that made ``torch.load(path, weights_only=True)`` fail, if any.

    None when ``error`` is an ordinary failure (truncated, corrupt, not a torch file).
    """
    return _named_in_message(str(error)) or _unsafe_global_in_file(path)


# torch's weights-only unpickler names the global it refused; the wording changed
# across versions ("Unsupported global: GLOBAL x was not an allowed global",
# "unsupported GLOBAL x whose module m is blocked", "call reduce for unrecognized
# function x", "Can only create new object for ... but got <class x>").
_REFUSED_GLOBAL = re.compile(
    r"GLOBAL (?P<g>\S+)|unrecognized function (?P<f>\S+)|allowlisted via .*got (?P<c>\S+)"
    r"|add_safe_globals\(\[(?P<s>[^\]]+)\]"
    r"|Can only create new object(?:.*?got (?P<n>\S+))?"
)


def _named_in_message(message: str) -> str | None:
    match = _REFUSED_GLOBAL.search(message)
    if match is None:
        return None
    name = next((g for g in match.groups() if g), None)
    return name.rstrip(".,>'") if name else "an object of a class it does not allow"


def _unsafe_global_in_file(path: Path, limit: int = 64 << 20) -> str | None:
    """The first global a pickle in ``path`` imports that weights-only loading refuses.

    For pickles torch gives up on before it meets the global (a raw
    ``pickle.dump`` of protocol 4+ fails on its FRAME opcode): reading the
    opcodes runs nothing. None for anything that is not a readable pickle.
    """
    try:
        if zipfile.is_zipfile(path):  # torch.save: the pickle is <name>/data.pkl
            with zipfile.ZipFile(path) as z:
                name = next((n for n in z.namelist() if n.endswith("/data.pkl")), None)
                data = z.read(name)[:limit] if name else b""
        else:
            with open(path, "rb") as f:
                data = f.read(limit)
    except (OSError, zipfile.BadZipFile, KeyError):
        return None
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
    except Exception:  # noqa: BLE001 - private API: fall back to torch's own modules
        allowed = None
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST"):
                name = str(arg).replace(" ", ".")
            elif op.name == "STACK_GLOBAL":  # module and name were pushed just before
                name = ".".join(strings[-2:])
            else:
                if isinstance(arg, str):
                    strings.append(arg)
                continue
            ok = name in allowed if allowed is not None else name.startswith("torch.")
            if not ok:
                return name
    except Exception:  # noqa: BLE001 - not a pickle (or a damaged one): nothing to report
        return None
    return None
