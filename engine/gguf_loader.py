"""Load a .gguf file (llama.cpp's format): configuration, weights dequantized to float32 once, and tokenizer.

The format: "GGUF", version, counts, then metadata (typed key-values, the vocabulary among them), then
tensor descriptions (name, dimensions innermost first, GGML type, offset), then aligned tensor data.
The header is read here with `struct` (gguf's GGUFReader builds a NumPy array per vocabulary string,
6-16 s for SmolLM2's 49k tokens); the data is memory-mapped and dequantized by `gguf.quants`.

GGUF names tensors its own way (`blk.3.attn_q.weight`); they are renamed to Hugging Face's names here
and then built by the same functions as a safetensors checkpoint (`checkpoint.llama_weights`,
`checkpoint.gpt2_weights`). GGUF matrices are [out, in] like Hugging Face's Llama tensors.
"""

from __future__ import annotations

import dataclasses
import mmap
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checkpoint import TensorSource, gpt2_weights, llama_weights
from .errors import CheckpointError
from .model import Config, Weights
from .tokenizer import Tokenizer, gguf_tokenizer

SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1")
ARCHITECTURES = ("llama", "gpt2")

# GGUF metadata value types: struct format of each scalar; 8 is a string, 9 an array.
GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
GGUF_STRING, GGUF_ARRAY = 8, 9

# GGUF tensor name -> Hugging Face name; `{i}` is the block number.
LLAMA_NAMES = {
    "token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head",
    "blk.{i}.attn_norm": "model.layers.{i}.input_layernorm", "blk.{i}.attn_q": "model.layers.{i}.self_attn.q_proj",
    "blk.{i}.attn_k": "model.layers.{i}.self_attn.k_proj", "blk.{i}.attn_v": "model.layers.{i}.self_attn.v_proj",
    "blk.{i}.attn_output": "model.layers.{i}.self_attn.o_proj",
    "blk.{i}.ffn_norm": "model.layers.{i}.post_attention_layernorm",
    "blk.{i}.ffn_gate": "model.layers.{i}.mlp.gate_proj", "blk.{i}.ffn_up": "model.layers.{i}.mlp.up_proj",
    "blk.{i}.ffn_down": "model.layers.{i}.mlp.down_proj",
}
GPT2_NAMES = {
    "token_embd": "wte", "position_embd": "wpe", "output_norm": "ln_f", "output": "lm_head",
    "blk.{i}.attn_norm": "h.{i}.ln_1", "blk.{i}.attn_qkv": "h.{i}.attn.c_attn", "blk.{i}.attn_output": "h.{i}.attn.c_proj",
    "blk.{i}.ffn_norm": "h.{i}.ln_2", "blk.{i}.ffn_up": "h.{i}.mlp.c_fc", "blk.{i}.ffn_down": "h.{i}.mlp.c_proj",
}
# GPT-2's Hugging Face checkpoints store these as Conv1D [in, out]; llama.cpp's converter transposed them.
GPT2_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


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


def load_gguf(path: Path) -> tuple[Config, Weights, Tokenizer]:
    path = Path(path)
    header = read_gguf_header(path)
    cfg = config_from_gguf(header.meta, gguf_vocab_size(header), path.name)
    memory = np.asarray(np.memmap(path, dtype=np.uint8, mode="r"))  # plain ndarray: memmap views are slow to slice
    tensors = {hf_name(t.name, cfg.arch): dequantize_tensor(memory, header.data_start, t, path) for t in header.tensors}
    src = TensorSource(tensors, f"{path.name} (GGUF names mapped to Hugging Face's)",
                       "Llama" if cfg.arch == "llama" else "GPT-2")
    weights = llama_from_gguf(src, cfg) if cfg.arch == "llama" else gpt2_from_gguf(src, cfg)
    return cfg, weights, gguf_tokenizer(header.meta, cfg.n_vocab, path.name)


def gguf_vocab_size(header: GGUFHeader) -> int:
    """Rows of the token embedding (the vocabulary list's length if the file has no embedding)."""
    shapes = {t.name: t.shape for t in header.tensors}
    return shapes.get("token_embd.weight", (len(header.meta.get("tokenizer.ggml.tokens", [])),))[0]


def read_gguf_header(path: Path, *, arrays: bool = True) -> GGUFHeader:
    """Metadata and tensor descriptions; with arrays=False the arrays (vocabulary, merges) are skipped."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _read_header(_Cursor(data), arrays)
    except (struct.error, ValueError, UnicodeDecodeError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable GGUF file ({e}): it may be truncated or not GGUF "
                              "at all; download it again") from None


def _read_header(cursor: _Cursor, arrays: bool) -> GGUFHeader:
    from gguf import GGMLQuantizationType

    magic, version, n_tensors, n_kv = cursor.read("4sIQQ")
    if magic != b"GGUF" or version not in (2, 3):
        raise ValueError("no GGUF magic" if magic != b"GGUF" else f"GGUF version {version}")
    meta = {}
    for _ in range(n_kv):
        key = cursor.string()
        meta[key] = cursor.value(cursor.read("I"), arrays)
    tensors = []
    for _ in range(n_tensors):
        name = cursor.string()
        n_dims = cursor.read("I")
        dims = struct.unpack_from(f"<{n_dims}Q", cursor.data, cursor.pos)  # innermost first
        cursor.pos += 8 * n_dims
        kind, offset = GGMLQuantizationType(cursor.read("I")), cursor.read("Q")
        tensors.append(TensorInfo(name, kind, tuple(reversed(dims)), offset))
    alignment = meta.get("general.alignment", 32)
    return GGUFHeader(meta, tensors, data_start=-(-cursor.pos // alignment) * alignment)


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

    def value(self, kind: int, arrays: bool = True):
        """A metadata value; with arrays=False, arrays are skipped (None)."""
        if kind in GGUF_SCALARS:
            return self.read(GGUF_SCALARS[kind])
        if kind == GGUF_STRING:
            return self.string()
        if kind == GGUF_ARRAY:
            item, count = self.read("IQ")
            if item in GGUF_SCALARS:
                fmt = f"<{count}{GGUF_SCALARS[item]}"
                values = list(struct.unpack_from(fmt, self.data, self.pos)) if arrays else None
                self.pos += struct.calcsize(fmt)
                if self.pos > len(self.data):
                    raise struct.error("array runs past the end")
                return values
            values = [self.value(item, arrays) for _ in range(count)]
            return values if arrays else None
        raise ValueError(f"unknown metadata type {kind}")


def config_from_gguf(meta: dict, n_vocab: int, where: str) -> Config:
    """Our Config from the `{arch}.*` metadata that llama.cpp's converter writes."""
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"{where}: architecture {arch!r} is not supported (llmx runs "
                              f"{' and '.join(ARCHITECTURES)} GGUF files)")
    try:
        n_embd, n_head = meta[f"{arch}.embedding_length"], meta[f"{arch}.attention.head_count"]
        common = dict(arch=arch, n_vocab=n_vocab, n_ctx=meta[f"{arch}.context_length"], n_embd=n_embd,
                      n_layer=meta[f"{arch}.block_count"], n_head=n_head, n_ff=meta[f"{arch}.feed_forward_length"])
        if arch == "gpt2":
            return Config(**common, n_kv_head=n_head, norm_eps=meta["gpt2.attention.layer_norm_epsilon"])
        check_llama_rope(meta, n_embd // n_head, where)
        return Config(**common, n_kv_head=meta.get("llama.attention.head_count_kv", n_head),
                      norm_eps=meta["llama.attention.layer_norm_rms_epsilon"],
                      rope_theta=float(meta.get("llama.rope.freq_base", 10000.0)))
    except KeyError as e:
        raise CheckpointError(f"{where} lacks the metadata {e} that a {arch} GGUF file has: convert it again") \
            from None


def check_llama_rope(meta: dict, d_head: int, where: str) -> None:
    """The engine rotates whole heads with plain RoPE: no partial rotation, no scaling."""
    for key in ("llama.rope.dimension_count", "llama.attention.key_length"):
        if meta.get(key, d_head) != d_head:
            raise CheckpointError(f"{where}: {key} = {meta[key]} differs from the head size {d_head}, "
                                  "which llmx does not support")
    scaling = meta.get("llama.rope.scaling.type", "none")
    if scaling != "none":
        raise CheckpointError(f"{where}: RoPE scaling {scaling!r} is not supported yet")


def hf_name(gguf_name: str, arch: str) -> str:
    """`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`; unknown names stay as they are."""
    stem, _, kind = gguf_name.rpartition(".")
    block = re.fullmatch(r"blk\.(\d+)\.(\w+)", stem)
    key = f"blk.{{i}}.{block[2]}" if block else stem
    names = LLAMA_NAMES if arch == "llama" else GPT2_NAMES
    if key not in names:
        return gguf_name
    return names[key].format(i=block[1] if block else "") + "." + kind


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


def unpermute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's reordering of query/key rows for its interleaved RoPE.

    Its converter makes the rotary pairs (i, i + d_head/2) of each head neighbours (rows 2i, 2i+1);
    the engine's apply_rope uses Hugging Face's rotate-half layout, so the rows go back here.
    w: [n_head * d_head, n_embd]
    """
    n_out = w.shape[0]
    return w.reshape(n_head, n_out // n_head // 2, 2, -1).swapaxes(1, 2).reshape(w.shape)


def llama_from_gguf(src: TensorSource, cfg: Config) -> Weights:
    if "rope_freqs.weight" in src.tensors:
        raise CheckpointError(f"{src.origin} has rope_freqs (Llama 3.1-style long-context RoPE), "
                              "which llmx does not support yet")
    for i in range(cfg.n_layer):
        for name, heads in (("q_proj", cfg.n_head), ("k_proj", cfg.n_kv_head)):
            key = f"model.layers.{i}.self_attn.{name}.weight"
            if key in src.tensors:  # a missing one is reported by llama_weights
                src.tensors[key] = unpermute_rope(src.tensors[key], heads)
    return llama_weights(src, cfg)


def gpt2_from_gguf(src: TensorSource, cfg: Config) -> Weights:
    for name, tensor in src.tensors.items():
        if name.endswith(GPT2_CONV1D):
            src.tensors[name] = tensor.T  # a view as Conv1D's [in, out]; gpt2_weights views it back as [out, in]
    weights = gpt2_weights(src, cfg)
    if "lm_head.weight" not in src.tensors:  # tied: the unembedding is the token embedding
        return weights
    return dataclasses.replace(weights, lm_head=src.take("lm_head.weight", (cfg.n_vocab, cfg.n_embd)))
