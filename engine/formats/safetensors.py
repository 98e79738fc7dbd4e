"""Read a .safetensors file as memory-mapped NumPy arrays: no copy, pages load as the model touches them.

The format: 8 bytes little-endian header length, a JSON header
{name: {"dtype", "shape", "data_offsets": [begin, end]}}, then the raw tensor bytes.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from ..memory import mapped_file

DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": None, "F64": np.float64, "I64": np.int64,
          "I32": np.int32, "U8": np.uint8, "BOOL": np.bool_}


ITEM_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "U8": 1, "BOOL": 1}


def read_header(path: Path) -> tuple[dict, int]:
    """The JSON header {name: {"dtype", "shape", "data_offsets"}} and the file offset where the data starts.

    Every entry is checked against the file here (offsets inside the data and not overlapping, byte
    counts that fit the shape), so a damaged header fails before any tensor is used."""
    header, data_start = _read_json_header(path)
    header.pop("__metadata__", None)
    check_entries(header, path.stat().st_size - data_start, path)
    return header, data_start


def read_metadata(path: Path) -> dict:
    """The header's optional "__metadata__" {str: str} (empty when there is none)."""
    metadata = _read_json_header(path)[0].get("__metadata__")
    return metadata if isinstance(metadata, dict) else {}


def _read_json_header(path: Path) -> tuple[dict, int]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is too short to be a safetensors file: {_fix(path)}")
        (n_header,) = struct.unpack("<Q", head)
        if n_header > min(size - 8, 100_000_000):
            raise CheckpointError(f"{path} is not a safetensors file (bad header length): {_fix(path)}")
        try:
            header = json.loads(f.read(n_header))
        except (ValueError, RecursionError):  # bad JSON or UTF-8, integers over 4300 digits, deep nesting
            header = None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a corrupt safetensors header: {_fix(path)}")
    return header, 8 + n_header


def check_entries(header: dict, n_data: int, path: Path) -> None:
    """Each tensor's [begin, end) inside the n_data bytes after the header, holding exactly its shape, and no
    two tensors sharing bytes (a damaged header would otherwise give NaN, or one tensor's data to another)."""
    spans = []
    for name, info in header.items():
        begin, end = _span(name, info, path)
        if end > n_data:
            raise CheckpointError(f"{path} is truncated (tensor '{name}' runs past the end of the file): "
                                  f"{_fix(path)}")
        spans.append((begin, end, name))
    spans.sort()
    for (_, end, name), (begin, _, other) in zip(spans, spans[1:]):
        if begin < end:
            raise CheckpointError(f"{path} has a corrupt header (tensors '{name}' and '{other}' share bytes): "
                                  f"{_fix(path)}")


def _span(name: str, info, path: Path) -> tuple[int, int]:
    """[begin, end) of one header entry, checked: whole numbers, in order, as many bytes as the shape needs."""
    def whole(x) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and x >= 0

    try:
        dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
    except (KeyError, TypeError, ValueError):
        dtype = shape = begin = end = None
    ok = isinstance(dtype, str) and isinstance(shape, list) and all(map(whole, shape)) and whole(begin) and \
        whole(end) and begin <= end
    if not ok or (dtype in ITEM_BYTES and end - begin != math.prod(shape) * ITEM_BYTES[dtype]):
        raise CheckpointError(f"{path} has a corrupt entry for tensor '{name}': {_fix(path)}")
    return begin, end


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of the file as a float32 array (float32 ones are read-only views of the memory map)."""
    header, data_start = read_header(path)
    memory = mapped_file(path)
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        tensors[name] = _as_float32(memory[data_start + begin:data_start + end], info, name, path)
    return tensors


def _fix(path: Path) -> str:
    """What to do about a damaged file. In the HF cache a snapshot entry is a link to a blob: deleting the
    link alone would bring the same blob back, so name the blob."""
    return f"delete {path.resolve()} and download it again" if path.is_symlink() else "download it again"


def _as_float32(raw: np.ndarray, info: dict, name: str, path: Path) -> np.ndarray:
    dtype, shape = info["dtype"], tuple(info["shape"])
    if dtype == "BF16":  # bfloat16 is the top half of a float32
        halves = raw.view(np.uint16).astype(np.uint32)
        return (halves << 16).view(np.float32).reshape(shape)
    if dtype not in DTYPES:
        raise CheckpointError(f"tensor '{name}' in {path} has dtype {dtype}, which llmx cannot read")
    array = raw.view(DTYPES[dtype]).reshape(shape)
    if array.dtype != np.float32:
        return array.astype(np.float32)
    if array.ctypes.data % 64:  # an unaligned view makes matrix products several times slower
        return np.array(array)
    return array
