"""A small reader and writer of the safetensors format, without the ``safetensors`` package.

Model folders (``model_folder.py``) hold their weights in ``model.safetensors``, the
format of the Hugging Face Hub, because reading it never runs code: it is a
JSON header and raw numbers, where a ``torch.save`` file is a pickle. Training
writes a model folder with only the core dependencies installed, so this
module implements the format itself (it is a page long):

- 8 bytes: the header's length N, an unsigned little-endian integer;
- N bytes: a JSON object ``{name: {"dtype": "F32", "shape": [..], "data_offsets":
  [begin, end]}, "__metadata__": {str: str}}``, padded with spaces so the data
  starts 8-byte aligned;
- the tensors' bytes, little-endian, packed one after the other; the offsets
  are relative to the start of this block and cover it without gaps.

Files written here load with ``safetensors.torch.load_file`` and files written
by it load here (``tests/test_sharing.py`` checks both). Every malformed file
is refused before a tensor is built, with one line naming it
(:class:`errors.ModelFileError`).
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
from collections.abc import Mapping
from pathlib import Path

import torch

from .atomic import atomic_write_bytes
from .errors import ModelFileError

# The format's names of the dtypes torch can hold (safetensors' own table, less
# the float8 kinds that a style network never stores).
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}
# The reference implementation refuses larger headers: a corrupt length cannot
# make us read (or allocate) gigabytes.
MAX_HEADER = 100_000_000
_METADATA = "__metadata__"


def encode(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """The bytes of a safetensors file holding ``tensors`` and the string ``metadata``."""
    header: dict[str, object] = {}
    if metadata:
        bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:  # the format allows strings only; a caller passing others is a bug
            raise TypeError(f"safetensors metadata must map str to str; bad keys {bad}")
        header[_METADATA] = dict(metadata)
    chunks = []
    offset = 0
    # Largest items first, then by name, as the reference writer orders them, so
    # every tensor starts aligned to its element size.
    order = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    for name in order:
        tensor = tensors[name]
        if tensor.dtype not in _NAMES:
            raise TypeError(f"safetensors cannot hold {name!r} of dtype {tensor.dtype}")
        data = _bytes(tensor)
        header[name] = {
            "dtype": _NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    return b"".join([struct.pack("<Q", len(text)), text, *chunks])


def save_file(
    tensors: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``tensors`` to ``path`` as safetensors, atomically (temp file + rename)."""
    return atomic_write_bytes(path, encode(tensors, metadata))


def load_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file; a malformed one: ModelFileError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read ({e.strerror or e})") from None
    return decode(data, name=str(path))


def decode(data: bytes, *, name: str = "safetensors data") -> tuple[dict, dict[str, str]]:
    """``(tensors, metadata)`` from the bytes of a safetensors file, everything checked first.

    Nothing is unpickled or evaluated: the header is JSON, the tensors are copied
    from the bytes. ``name`` is what error messages call the data (its file).
    """
    header, start = _header(data, name)
    metadata = header.pop(_METADATA, None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise _bad(name, "'__metadata__' must map strings to strings")
    entries = []
    for key, info in header.items():
        dtype, shape, begin, end = _entry(name, key, info)
        entries.append((begin, end, key, dtype, shape))
    # The tensors tile the data block exactly: no gaps, no overlaps, nothing after.
    entries.sort()
    expected = 0
    for begin, end, key, _, _ in entries:
        if begin != expected:
            raise _bad(name, f"tensor {key!r} starts at byte {begin}, expected {expected}")
        expected = end
    if start + expected != len(data):
        raise _bad(
            name,
            f"the tensors take {expected} bytes but the file holds {len(data) - start} after "
            "its header (truncated or padded)",
        )
    tensors = {key: _tensor(data[start + b : start + e], dt, sh) for b, e, key, dt, sh in entries}
    return tensors, dict(metadata)


def _header(data: bytes, name: str) -> tuple[dict, int]:
    """The parsed JSON header and the offset where the tensor data starts."""
    if len(data) < 8:
        raise _bad(name, f"{len(data)} bytes, shorter than the 8-byte header length")
    (size,) = struct.unpack("<Q", data[:8])
    if size > MAX_HEADER or 8 + size > len(data):
        raise _bad(name, f"header length {size} does not fit a {len(data)}-byte file")
    raw = data[8 : 8 + size]
    if not raw.startswith(b"{"):
        raise _bad(name, "the header is not a JSON object")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(name, f"the header is not valid JSON ({e.__class__.__name__})") from None
    if not isinstance(header, dict):
        raise _bad(name, "the header is not a JSON object")
    return header, 8 + size


def _entry(name: str, key: str, info: object) -> tuple[torch.dtype, list[int], int, int]:
    """One tensor's (dtype, shape, begin, end), each checked against the others."""
    if not isinstance(info, dict):
        raise _bad(name, f"entry {key!r} is not an object")
    dtype = DTYPES.get(info.get("dtype"))  # type: ignore[arg-type]
    if dtype is None:
        raise _bad(name, f"tensor {key!r} has an unknown dtype {info.get('dtype')!r}")
    shape = info.get("shape")
    if not isinstance(shape, list) or not all(_count(n) for n in shape):
        raise _bad(name, f"tensor {key!r} has shape {shape!r}, expected a list of sizes >= 0")
    offsets = info.get("data_offsets")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_count, offsets))):
        raise _bad(name, f"tensor {key!r} has data_offsets {offsets!r}, expected [begin, end]")
    begin, end = offsets
    size = math.prod(shape) * _itemsize(dtype)
    if end - begin != size:
        raise _bad(
            name, f"tensor {key!r} of shape {shape} takes {size} bytes, its offsets {end - begin}"
        )
    return dtype, shape, begin, end


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _bytes(tensor: torch.Tensor) -> bytes:
    """The tensor's elements as little-endian bytes, in row-major order."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    if flat.numel() == 0:
        return b""
    raw = flat.view(torch.uint8) if flat.dtype != torch.bool else flat.to(torch.uint8)
    if sys.byteorder == "big" and flat.element_size() > 1:
        raw = raw.view(-1, flat.element_size()).flip(1).reshape(-1)
    return raw.numpy().tobytes()


def _tensor(data: bytes, dtype: torch.dtype, shape: list[int]) -> torch.Tensor:
    """A tensor that owns a copy of ``data`` (little-endian elements)."""
    if not data:
        return torch.empty(shape, dtype=dtype)
    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    size = _itemsize(dtype)
    if sys.byteorder == "big" and size > 1:
        raw = raw.view(-1, size).flip(1).reshape(-1).clone()
    if dtype == torch.bool:
        return (raw != 0).reshape(shape)
    return raw.view(dtype).reshape(shape)


def _bad(name: str, why: str) -> ModelFileError:
    return ModelFileError(f"{name}: not a valid safetensors file ({why})")
