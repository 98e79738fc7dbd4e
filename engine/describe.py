"""describe(path): what a model file is (architecture, size, quantization), from its headers alone.

Nothing is dequantized or even read beyond the headers, so this is fast for any model size.
A .gguf header is scanned here directly: GGUFReader parses every token string into its own array,
which takes seconds for a 50k-token vocabulary.
"""

from __future__ import annotations

import json
import mmap
import struct
from collections import Counter
from pathlib import Path

from .checkpoint import config_from_hf, read_config_json, safetensors_files
from .errors import CheckpointError

# GGUF metadata value types: struct format of each scalar; 8 is a string, 9 an array.
GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
GGUF_STRING, GGUF_ARRAY = 8, 9


def describe(path) -> dict:
    """architecture, parameters, quantization, context_length, n_layer, n_embd, n_head, n_kv_head,
    vocab_size, file_size (bytes of the weight files) and format, for a .gguf file or a Hugging Face directory."""
    path = Path(path)
    return describe_gguf(path) if path.is_file() else describe_hf_directory(path)


def describe_hf_directory(directory: Path) -> dict:
    cfg = config_from_hf(read_config_json(directory), str(directory / "config.json"))
    files = safetensors_files(directory)
    counts: Counter[str] = Counter()  # parameters per dtype
    for path in files:
        for info in safetensors_header(path).values():
            counts[info["dtype"]] += _product(info["shape"])
    return dict(format="safetensors", architecture=cfg.arch, parameters=sum(counts.values()),
                quantization=quantization_label(counts), context_length=cfg.n_ctx, n_layer=cfg.n_layer,
                n_embd=cfg.n_embd, n_head=cfg.n_head, n_kv_head=cfg.n_kv_head, vocab_size=cfg.n_vocab,
                file_size=sum(p.stat().st_size for p in files))


def describe_gguf(path: Path) -> dict:
    meta, tensors = gguf_header(path)
    arch = meta.get("general.architecture")
    counts: Counter[str] = Counter()
    for _, kind, shape in tensors:
        counts[kind] += _product(shape)
    embedding = next((shape for name, _, shape in tensors if name == "token_embd.weight"), None)
    n_head = meta.get(f"{arch}.attention.head_count")
    return dict(format="gguf", architecture=arch, parameters=sum(counts.values()),
                quantization=quantization_label(counts), context_length=meta.get(f"{arch}.context_length"),
                n_layer=meta.get(f"{arch}.block_count"), n_embd=meta.get(f"{arch}.embedding_length"),
                n_head=n_head, n_kv_head=meta.get(f"{arch}.attention.head_count_kv", n_head),
                vocab_size=embedding[0] if embedding else meta.get(f"{arch}.vocab_size"),
                file_size=path.stat().st_size)


def quantization_label(counts: Counter) -> str:
    """The type holding most parameters, then the others by size: "Q4_1 (+Q8_0, F32)"."""
    kinds = [kind for kind, _ in counts.most_common()]
    if not kinds:
        return "none"
    return kinds[0] + (f" (+{', '.join(kinds[1:])})" if len(kinds) > 1 else "")


def safetensors_header(path: Path) -> dict:
    """The JSON header of a .safetensors file: {name: {"dtype", "shape", "data_offsets"}}."""
    with open(path, "rb") as f:
        head = f.read(8)
        (n_header,) = struct.unpack("<Q", head) if len(head) == 8 else (-1,)
        if not 0 < n_header <= min(path.stat().st_size - 8, 100_000_000):
            raise CheckpointError(f"{path} is not a safetensors file (bad header length): download it again")
        try:
            header = json.loads(f.read(n_header))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{path} has a corrupt safetensors header: download it again") from None
    header.pop("__metadata__", None)
    return header


class _Cursor:
    """Little-endian reads from a GGUF header held in memory."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def read(self, fmt: str):
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values[0] if len(values) == 1 else values

    def string(self) -> str:
        n = self.read("Q")
        self.pos += n
        if self.pos > len(self.data):
            raise struct.error("string runs past the end")
        return self.data[self.pos - n:self.pos].decode("utf-8", errors="replace")

    def value(self, kind: int):
        """A metadata value; arrays are skipped (None): describe needs only scalars."""
        if kind in GGUF_SCALARS:
            return self.read(GGUF_SCALARS[kind])
        if kind == GGUF_STRING:
            return self.string()
        if kind == GGUF_ARRAY:
            item, count = self.read("IQ")
            if item in GGUF_SCALARS:
                self.pos += count * struct.calcsize("<" + GGUF_SCALARS[item])
            else:
                for _ in range(count):
                    self.value(item)
            return None
        raise ValueError(f"unknown metadata type {kind}")


def gguf_header(path: Path) -> tuple[dict, list[tuple[str, str, tuple[int, ...]]]]:
    """(scalar metadata, [(tensor name, type name, shape in NumPy order)]) from a GGUF file's header."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _scan_gguf(_Cursor(data))
    except (struct.error, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable GGUF file ({e}): it may be truncated or not GGUF "
                              "at all; download it again") from None


def _scan_gguf(cursor: _Cursor) -> tuple[dict, list[tuple[str, str, tuple[int, ...]]]]:
    from gguf import GGMLQuantizationType

    magic, version, n_tensors, n_kv = cursor.read("4sIQQ")
    if magic != b"GGUF" or version not in (2, 3):
        raise ValueError("no GGUF magic" if magic != b"GGUF" else f"GGUF version {version}")
    meta = {}
    for _ in range(n_kv):
        key = cursor.string()
        meta[key] = cursor.value(cursor.read("I"))
    tensors = []
    for _ in range(n_tensors):
        name = cursor.string()
        n_dims = cursor.read("I")
        dims = struct.unpack_from(f"<{n_dims}Q", cursor.data, cursor.pos)  # innermost first
        cursor.pos += 8 * n_dims
        kind = GGMLQuantizationType(cursor.read("I")).name
        cursor.read("Q")  # data offset
        tensors.append((name, kind, tuple(reversed(dims))))
    return meta, tensors


def _product(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
