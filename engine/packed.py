"""GPT-2's matrices repacked row-major [out, in] once, into llmx's cache, for fast decoding.

Hugging Face's GPT-2 checkpoints store each matrix as Conv1D's [in, out]. The engine can use them
as transposed views of the memory map, with no copy, but decoding one token is a matrix-vector
product per matrix, and OpenBLAS runs those about 30% faster on row-major [out, in] matrices
(bench/bench.py measures it). So on the first load the four matrices of every block are written,
transposed, to `$LLMX_CACHE` (default `~/.cache/llmx`) as a safetensors file named after the
checkpoint's path, size and modification time; every later load memory-maps that file instead.
Set LLMX_PACK=0 to use the views as they are.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import CheckpointError
from .model import Block, Weights
from .safetensors_mmap import read_safetensors

MATRICES = ("c_attn", "c_proj", "c_fc", "mlp_c_proj")


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmx"
    return Path(os.environ.get("LLMX_CACHE") or default)


def packed(weights: Weights, sources: list[Path], notice: Callable[[str], None]) -> Weights:
    """`weights` with every block matrix replaced by its row-major copy from the cache (written if missing)."""
    if os.environ.get("LLMX_PACK", "1") == "0" or all(m.w.flags.c_contiguous for m in matrices(weights)):
        return weights
    path = cache_dir() / f"gpt2-{fingerprint(sources)}.safetensors"
    if not path.is_file():
        size = sum(m.w.nbytes for m in matrices(weights))
        notice(f"packing the weights for fast decoding, once: {size / 1e6:.0f} MB into {path.parent}")
        try:
            write_safetensors(path, {name: m.w for name, m in named_matrices(weights)})
        except OSError as e:
            notice(f"cannot write {path} ({e.strerror}): using the weights as they are (slower decoding)")
            return weights
    try:
        rows = read_safetensors(path)
    except CheckpointError:
        path.unlink(missing_ok=True)  # a damaged pack is rebuilt on the next load
        return weights
    return replace_matrices(weights, rows)


def matrices(weights: Weights):
    return (m for _, m in named_matrices(weights))


def named_matrices(weights: Weights):
    for i, block in enumerate(weights.blocks):
        for name in MATRICES:
            yield f"h.{i}.{name}", getattr(block, name)


def replace_matrices(weights: Weights, rows: dict[str, np.ndarray]) -> Weights:
    def block(i: int, b: Block) -> Block:
        changes = {}
        for name in MATRICES:
            old, new = getattr(b, name), rows.get(f"h.{i}.{name}")
            if new is None or new.shape != old.w.shape:
                return b  # not this checkpoint's pack: keep the views
            changes[name] = dataclasses.replace(old, w=new)
        return dataclasses.replace(b, **changes)

    return dataclasses.replace(weights, blocks=tuple(block(i, b) for i, b in enumerate(weights.blocks)))


def fingerprint(sources: list[Path]) -> str:
    """Changes whenever a source file is replaced: its resolved path, size and modification time."""
    digest = hashlib.sha256()
    for source in sources:
        stat = source.stat()
        digest.update(f"{source.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """A safetensors file of float32 tensors, written row-major one tensor at a time, then renamed into place."""
    header, offset = {}, 0
    for name, array in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    text = json.dumps(header).encode()
    text += b" " * (-(8 + len(text)) % 64)  # so that the data, and each tensor after it, starts 64-byte aligned
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    try:
        with open(partial, "wb") as f:
            f.write(len(text).to_bytes(8, "little") + text)
            for array in tensors.values():
                f.write(np.ascontiguousarray(array, dtype=np.float32).tobytes())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
