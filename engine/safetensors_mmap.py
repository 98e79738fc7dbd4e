"""Read a .safetensors file as memory-mapped NumPy arrays: no copy, pages load as the model touches them.

The format: 8 bytes little-endian header length, a JSON header
{name: {"dtype", "shape", "data_offsets": [begin, end]}}, then the raw tensor bytes.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from .errors import CheckpointError

DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": None, "F64": np.float64, "I64": np.int64,
          "I32": np.int32, "U8": np.uint8, "BOOL": np.bool_}


def read_header(path: Path) -> tuple[dict, int]:
    """The JSON header {name: {"dtype", "shape", "data_offsets"}} and the file offset where the data starts."""
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
        except (json.JSONDecodeError, UnicodeDecodeError):
            header = None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a corrupt safetensors header: {_fix(path)}")
    header.pop("__metadata__", None)
    return header, 8 + n_header


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of the file as a float32 array (float32 ones are read-only views of the memory map)."""
    size = path.stat().st_size
    header, data_start = read_header(path)
    # A plain ndarray over the map, not np.memmap: every result computed from a memmap is a memmap too,
    # and that subclass's bookkeeping made small operations (layer norms) several times slower.
    memory = np.asarray(np.memmap(path, dtype=np.uint8, mode="r"))
    tensors = {}
    for name, info in header.items():
        try:
            begin, end = info["data_offsets"]
            if data_start + end > size:
                raise CheckpointError(f"{path} is truncated (tensor '{name}' runs past the end of the file): "
                                      f"{_fix(path)}")
            tensors[name] = _as_float32(memory[data_start + begin:data_start + end], info, name, path)
        except (KeyError, TypeError, ValueError):  # missing fields, or a byte count that does not fit the shape
            raise CheckpointError(f"{path} has a corrupt entry for tensor '{name}': {_fix(path)}") from None
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
