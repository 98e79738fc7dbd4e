"""llama.cpp's .gguf files: header, tensor layout and dequantization, with no architecture knowledge.

The format: "GGUF", version, counts, then metadata (typed key-values, the vocabulary among them), then
tensor descriptions (name, dimensions innermost first, GGML type, offset), then aligned tensor data.
The header is read here with `struct` (gguf's GGUFReader builds a NumPy array per vocabulary string,
6-16 s for SmolLM2's 49k tokens); the data is memory-mapped and dequantized by `gguf.quants`.
Tensors keep their GGUF names (`blk.3.attn_q.weight`); engine/arch/ maps them onto the engine's.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from ..memory import mapped_file

# Every type gguf.quants dequantizes in NumPy (K-quants included); the i-quants need more than it has.
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
                   "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
# The metadata arrays llmx uses (the tokenizer's); a header is read with only these built as lists.
TOKENIZER_ARRAYS = frozenset({"tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
                              "tokenizer.ggml.scores"})
MAX_DIMS = 4  # GGML_MAX_DIMS
BLOCK = r"blk\.(\d+)\."  # captures the block number of a tensor name (llama.cpp names every block so)

# GGUF metadata value types: struct format of each scalar; 8 is a string, 9 an array.
GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
GGUF_STRING, GGUF_ARRAY = 8, 9


@dataclass(frozen=True)
class TensorInfo:
    name: str
    kind: "GGMLQuantizationType"  # noqa: F821 - gguf's enum of tensor types (F32, Q4_1, ...)
    shape: tuple[int, ...]  # NumPy order, outermost first: [out, in] for a matrix
    offset: int  # of its data, from the start of the data section


@dataclass(frozen=True)
class GGUFHeader:
    meta: dict  # metadata key -> value (arrays as lists)
    tensors: list[TensorInfo]
    data_start: int  # file offset of the (aligned) data section
    alignment: int = 32  # of every tensor's offset (general.alignment)


def gguf_vocab_size(header: GGUFHeader) -> int:
    """Rows of the token embedding (the vocabulary list's length if the file has no embedding)."""
    shapes = {t.name: t.shape for t in header.tensors}
    tokens = header.meta.get("tokenizer.ggml.tokens")
    return shapes.get("token_embd.weight", (len(tokens) if isinstance(tokens, list) else 0,))[0]


class _Damaged(Exception):
    """Why a GGUF header cannot be read, in words (no Python internals)."""


def read_gguf_header(path: Path, *, arrays: bool | frozenset = True) -> GGUFHeader:
    """Metadata and tensor descriptions. arrays: True builds every metadata array as a list, False none
    (they are None), a set of keys only those (the vocabulary takes far more memory as lists than on disk)."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise CheckpointError(f"{path} is not a readable GGUF file: it does not start with the GGUF magic "
                                      "bytes, so it is not a GGUF file (or a damaged one); download it again")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _read_header(_Cursor(data), arrays)
    except _Damaged as e:
        raise CheckpointError(f"{path} is not a readable GGUF file: {e}; download or convert it again") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path} ({e.strerror or e}): check the file") from None


def _read_header(cursor: _Cursor, arrays: bool | frozenset) -> GGUFHeader:
    magic, version, n_tensors, n_kv = cursor.read("4sIQQ")
    if version not in (2, 3):
        raise _Damaged(f"GGUF version {version} is not one llmx reads (2 or 3)")
    cursor.need(n_kv, 8 + 4 + 1)  # each key-value: a key's length, a type, at least a byte of value
    meta = {}
    for _ in range(n_kv):
        key = cursor.string()
        meta[key] = cursor.value(cursor.read("I"), arrays if isinstance(arrays, bool) else key in arrays)
    cursor.need(n_tensors, 8 + 4 + 4 + 8)  # each tensor: a name's length, dimensions, type, offset
    tensors = [_tensor_info(cursor) for _ in range(n_tensors)]
    alignment = meta.get("general.alignment", 32)
    if isinstance(alignment, bool) or not isinstance(alignment, int) or alignment <= 0:
        raise _Damaged(f"general.alignment is {alignment!r}, but must be a positive whole number")
    return GGUFHeader(meta, tensors, data_start=-(-cursor.pos // alignment) * alignment, alignment=alignment)


def _tensor_info(cursor: _Cursor) -> TensorInfo:
    from gguf import GGMLQuantizationType

    name = cursor.string()
    n_dims = cursor.read("I")
    if n_dims > MAX_DIMS:
        raise _Damaged(f"tensor '{name[:80]}' has {n_dims} dimensions (GGUF allows at most {MAX_DIMS})")
    dims = cursor.read_tuple(f"{n_dims}Q")  # innermost first
    number = cursor.read("I")
    try:
        kind = GGMLQuantizationType(number)
    except ValueError:
        raise _Damaged(f"tensor '{name[:80]}' has the unknown type number {number}") from None
    return TensorInfo(name, kind, tuple(reversed(dims)), cursor.read("Q"))


class _Cursor:
    """Little-endian reads from a GGUF header held in memory; reading past its end raises _Damaged."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def need(self, n_items: int, item_bytes: int) -> None:
        """At least n_items * item_bytes bytes are left: a count from the file is checked before any loop."""
        if n_items * item_bytes > len(self.data) - self.pos:
            raise _Damaged(f"it is truncated (a count of {n_items} items runs past the end of the file)")

    def read(self, fmt: str):
        values = self.read_tuple(fmt)
        return values[0] if len(values) == 1 else values

    def read_tuple(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise _Damaged("it is truncated (its header runs past the end of the file)")
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return values

    def string(self) -> str:
        n = self.read("Q")
        self.need(n, 1)
        self.pos += n
        return self.data[self.pos - n:self.pos].decode("utf-8", errors="replace")

    def strings(self, count: int, keep: bool) -> list[str] | None:
        """An array of `count` strings (a vocabulary: 262,144 for Gemma), in one tight loop."""
        data, pos, end, length = self.data, self.pos, len(self.data), struct.Struct("<Q").unpack_from
        out = [] if keep else None
        for _ in range(count):
            if pos + 8 > end:
                raise _Damaged("it is truncated (its header runs past the end of the file)")
            n, = length(data, pos)
            pos += 8 + n
            if keep:
                out.append(data[pos - n:pos].decode("utf-8", errors="replace"))
        if pos > end:
            raise _Damaged(f"it is truncated (a string of {n} bytes runs past the end of the file)")
        self.pos = pos
        return out

    def value(self, kind: int, keep: bool = True):
        """A metadata value; with keep=False an array is skipped without building it (None)."""
        if kind in GGUF_SCALARS:
            return self.read(GGUF_SCALARS[kind])
        if kind == GGUF_STRING:
            return self.string()
        if kind != GGUF_ARRAY:
            raise _Damaged(f"a metadata value has the unknown type number {kind}")
        item, count = self.read("IQ")
        if item in GGUF_SCALARS:
            size = struct.calcsize("<" + GGUF_SCALARS[item])
            self.need(count, size)
            values = list(struct.unpack_from(f"<{count}{GGUF_SCALARS[item]}", self.data, self.pos)) if keep else None
            self.pos += count * size
            return values
        self.need(count, 8 if item == GGUF_STRING else 12)  # a string's length, or an array's type and count
        if item == GGUF_STRING:
            return self.strings(count, keep)
        if not keep:
            for _ in range(count):
                self.value(item, keep=False)
            return None
        return [self.value(item) for _ in range(count)]


def check_tensor_layout(header: GGUFHeader, path: Path) -> None:
    """Every tensor's bytes inside the file, aligned, and shared with no other tensor (both checked before
    anything is dequantized: a damaged offset would otherwise give NaN or another tensor's values)."""
    spans = sorted((t.offset, t.offset + tensor_bytes(t, path), t.name) for t in header.tensors)
    n_data = path.stat().st_size - header.data_start
    for begin, end, name in spans:
        if begin % header.alignment:
            raise CheckpointError(f"{path.name}: tensor '{name}' starts at offset {begin}, which is not a multiple "
                                  f"of general.alignment ({header.alignment}): the file is damaged; download it again")
        if end > n_data:
            raise CheckpointError(f"{path} is truncated (tensor '{name}' runs past the end of the file): "
                                  "delete it and download it again")
    for (_, end, name), (begin, _, other) in zip(spans, spans[1:]):
        if begin < end:
            raise CheckpointError(f"{path.name}: tensors '{name}' and '{other}' share bytes (their offsets overlap): "
                                  "the file is damaged; download or convert it again")


def tensor_bytes(tensor: TensorInfo, path: Path) -> int:
    """Bytes of one tensor's data, from its type's block size; its rows must hold whole blocks."""
    from gguf.constants import GGML_QUANT_SIZES

    block, block_bytes = GGML_QUANT_SIZES[tensor.kind]  # values per block, bytes per block
    if any(d <= 0 for d in tensor.shape) or tensor.shape[-1] % block:
        raise CheckpointError(f"{path.name}: tensor '{tensor.name}' has shape {list(tensor.shape)}, which is not "
                              f"whole blocks of {block} {tensor.kind.name} values: the file is damaged")
    return math.prod(tensor.shape) // block * block_bytes


def read_tensors(path: Path, header: GGUFHeader) -> dict[str, np.ndarray]:
    """Every tensor of the file, by its GGUF name, dequantized to float32 once (after check_tensor_layout)."""
    memory = mapped_file(path)
    return {t.name: dequantize_tensor(memory, header.data_start, t, path) for t in header.tensors}


def dequantize_tensor(memory: np.ndarray, data_start: int, tensor: TensorInfo, path: Path) -> np.ndarray:
    """One tensor of the memory-mapped file as a float32 array of its NumPy shape."""
    from gguf.constants import GGML_QUANT_SIZES
    from gguf.quants import dequantize

    if tensor.kind.name not in SUPPORTED_TYPES:
        raise CheckpointError(f"{path.name}: tensor '{tensor.name}' is {tensor.kind.name}, which llmx cannot "
                              f"dequantize; it reads {', '.join(SUPPORTED_TYPES)}: pick a file quantized to one of those")
    block, block_bytes = GGML_QUANT_SIZES[tensor.kind]  # values per block, bytes per block
    *outer, inner = tensor.shape
    row_bytes = inner // block * block_bytes
    begin = data_start + tensor.offset
    end = begin + row_bytes * int(np.prod(outer, dtype=np.int64))
    if end > len(memory):
        raise CheckpointError(f"{path} is truncated (tensor '{tensor.name}' runs past the end of the file): "
                              "delete it and download it again")
    raw = memory[begin:end].reshape(*outer, row_bytes)  # [..., bytes of one row]
    # np.array copies: F32 tensors leave the memory map (GGUF aligns data to only 32 bytes).
    # One row of all the bytes: gguf dequantizes it in one go rather than 16 rows at a time.
    return np.array(dequantize(raw.reshape(1, -1), tensor.kind), dtype=np.float32).reshape(tensor.shape)
