"""Load a .gguf file (llama.cpp's format): configuration, weights dequantized to float32 once, and tokenizer.

GGUF names tensors its own way (`blk.3.attn_q.weight`); they are renamed to Hugging Face's names here
and then built by the same functions as a safetensors checkpoint (`checkpoint.llama_weights`,
`checkpoint.gpt2_weights`). GGUF matrices are [out, in] like Hugging Face's Llama tensors.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from .checkpoint import TensorSource, gpt2_weights, llama_weights
from .errors import CheckpointError
from .model import Config, Weights
from .tokenizer import Tokenizer, gguf_tokenizer

SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1")
ARCHITECTURES = ("llama", "gpt2")

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


def load_gguf(path: Path) -> tuple[Config, Weights, Tokenizer]:
    path = Path(path)
    reader = open_gguf(path)
    meta = {name: field.contents() for name, field in reader.fields.items()}
    shapes = {t.name: tuple(int(n) for n in reversed(t.shape)) for t in reader.tensors}  # numpy order
    n_vocab = shapes.get("token_embd.weight", (len(meta.get("tokenizer.ggml.tokens", [])),))[0]
    cfg = config_from_gguf(meta, n_vocab, path.name)
    tensors = {hf_name(t.name, cfg.arch): dequantize_tensor(t, path.name) for t in reader.tensors}
    src = TensorSource(tensors, f"{path.name} (GGUF names mapped to Hugging Face's)",
                       "Llama" if cfg.arch == "llama" else "GPT-2")
    weights = llama_from_gguf(src, cfg) if cfg.arch == "llama" else gpt2_from_gguf(src, cfg)
    return cfg, weights, gguf_tokenizer(meta, cfg.n_vocab, path.name)


def open_gguf(path: Path):
    """A memory-mapped GGUFReader; a file that is not GGUF, or is cut short, is a CheckpointError."""
    from gguf import GGUFReader

    try:
        return GGUFReader(path)
    except (ValueError, IndexError, KeyError, OSError, OverflowError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise CheckpointError(f"{path} is not a readable GGUF file ({reason}): it may be truncated or "
                              "not GGUF at all; download it again") from None


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


def dequantize_tensor(tensor, where: str) -> np.ndarray:
    """One GGUF tensor as a float32 array in NumPy order (GGUF lists dimensions innermost first)."""
    from gguf.quants import dequantize

    kind = tensor.tensor_type.name
    if kind not in SUPPORTED_TYPES:
        raise CheckpointError(f"{where}: tensor '{tensor.name}' is {kind}, which llmx cannot dequantize; "
                              f"it reads {', '.join(SUPPORTED_TYPES)}: pick a file quantized to one of those")
    shape = tuple(int(n) for n in reversed(tensor.shape))
    # np.array copies: F32 tensors leave the memory map (GGUF aligns data to only 32 bytes).
    return np.array(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32).reshape(shape)


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
            src.tensors[name] = np.ascontiguousarray(tensor.T)  # [out, in] -> Conv1D's [in, out]
    weights = gpt2_weights(src, cfg)
    if "lm_head.weight" not in src.tensors:  # tied: the unembedding is the token embedding
        return weights
    return dataclasses.replace(weights, lm_head=src.take("lm_head.weight", (cfg.n_vocab, cfg.n_embd)))
