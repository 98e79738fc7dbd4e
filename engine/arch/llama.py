"""Llama: RMSNorm, rotary positions, a SwiGLU MLP, no biases, grouped-query attention.

Its functions take the architecture's name and whether q, k and v have biases, so that close relatives
(qwen2.py) reuse them. llama.cpp's converter reorders each Llama head's query and key rows for its
interleaved rotary layout; `unpermute_rope` puts them back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from ..formats.checks import MAX_CONTEXT, count, positive_float, short
from ..formats.gguf import GGUFHeader
from ..model import Block, Config, Linear, Norm, Weights
from .common import TensorSource, check_config, flag, gguf_keys, gguf_sizes

NAME, TITLE = "llama", "Llama"
MODEL_TYPES = ("llama",)  # config.json's model_type
GGUF_ARCHITECTURES = ("llama",)  # a GGUF file's general.architecture
TOKENIZER_FILES, OPTIONAL_TOKENIZER_FILES = ("tokenizer.json",), ("tokenizer_config.json",)
GGUF_PRE_TOKENIZER = None  # Llama models split text many ways: a file must name its tokenizer.ggml.pre
FLAGS = dict(norm="rmsnorm", positions="rotary", mlp="swiglu")

# Config field -> its config.json key (the key names appear in errors).
HF_KEYS = dict(n_vocab="vocab_size", n_ctx="max_position_embeddings", n_embd="hidden_size",
               n_layer="num_hidden_layers", n_head="num_attention_heads", n_kv_head="num_key_value_heads",
               n_ff="intermediate_size", norm_eps="rms_norm_eps")
HF_BLOCK = r"model\.layers\.(\d+)\."  # captures the block number of a tensor name
# Engine name (q, k, v fused into w_qkv; gate, up into w_in) -> checkpoint name; `{i}` is the block number.
HF_NAMES = dict(embed="model.embed_tokens", unembed="lm_head", ln_final="model.norm",
                ln1="model.layers.{i}.input_layernorm", q="model.layers.{i}.self_attn.q_proj",
                k="model.layers.{i}.self_attn.k_proj", v="model.layers.{i}.self_attn.v_proj",
                w_o="model.layers.{i}.self_attn.o_proj", ln2="model.layers.{i}.post_attention_layernorm",
                gate="model.layers.{i}.mlp.gate_proj", up="model.layers.{i}.mlp.up_proj",
                w_out="model.layers.{i}.mlp.down_proj")
GGUF_NAMES = dict(embed="token_embd", unembed="output", ln_final="output_norm", ln1="blk.{i}.attn_norm",
                  q="blk.{i}.attn_q", k="blk.{i}.attn_k", v="blk.{i}.attn_v", w_o="blk.{i}.attn_output",
                  ln2="blk.{i}.ffn_norm", gate="blk.{i}.ffn_gate", up="blk.{i}.ffn_up", w_out="blk.{i}.ffn_down")


def config_from_hf(hf: dict, where: str) -> Config:
    """Our Config from Llama's config.json, every value checked before use."""
    for key in ("attention_bias", "mlp_bias"):
        if flag(hf, key, where, default=False):
            raise CheckpointError(f"{where}: {key} is true, which llmx does not support for Llama models")
    return family_config_from_hf(hf, where, NAME, qkv_bias=False)


def family_config_from_hf(hf: dict, where: str, name: str, *, qkv_bias: bool) -> Config:
    n_embd, n_head = count(hf, HF_KEYS["n_embd"], where), count(hf, HF_KEYS["n_head"], where)
    if hf.get("head_dim") is not None and (n_embd % n_head or hf["head_dim"] != n_embd // n_head):
        raise CheckpointError(f"{where}: head_dim {short(hf['head_dim'])} != hidden_size / num_attention_heads "
                              "is not supported")
    cfg = Config(arch=name, **FLAGS, qkv_bias=qkv_bias, d_head=n_embd // n_head,
                 n_vocab=count(hf, HF_KEYS["n_vocab"], where), n_embd=n_embd,
                 n_ctx=count(hf, HF_KEYS["n_ctx"], where, default=2048, limit=MAX_CONTEXT),
                 n_layer=count(hf, HF_KEYS["n_layer"], where), n_head=n_head,
                 n_kv_head=count(hf, HF_KEYS["n_kv_head"], where, default=n_head),
                 n_ff=count(hf, HF_KEYS["n_ff"], where), norm_eps=positive_float(hf, HF_KEYS["norm_eps"], where,
                                                                                 default=1e-6),
                 rope_theta=rope_theta(hf, where), tied=flag(hf, "tie_word_embeddings", where, default=False))
    check_config(cfg, HF_KEYS, where)
    return cfg


def rope_theta(hf: dict, where: str) -> float:
    """The rotary base, from `rope_theta` (transformers 4) and/or `rope_parameters` (transformers 5), which
    must agree; either may only describe plain RoPE (no scaling)."""
    for key in ("rope_scaling", "rope_parameters"):
        value = hf.get(key)
        plain = value in (None, {}) or isinstance(value, dict) and value.get("rope_type", "default") == "default"
        if not plain:
            raise CheckpointError(f"{where}: {key} {short(value)} is not supported yet")
    parameters = hf.get("rope_parameters") or {}
    found = {key: positive_float(values, name, where, default=10000.0)
             for key, values, name in (("rope_theta", hf, "rope_theta"),
                                       ("rope_parameters.rope_theta", parameters, "rope_theta"))
             if values.get(name) is not None}
    if len(set(found.values())) > 1:
        raise CheckpointError(f"{where}: rope_theta and rope_parameters.rope_theta disagree ({found['rope_theta']} "
                              f"and {found['rope_parameters.rope_theta']}): fix the file or download it again")
    return next(iter(found.values()), 10000.0)


def config_from_gguf(header: GGUFHeader, where: str) -> Config:
    return family_config_from_gguf(header, where, NAME, qkv_bias=False)


def family_config_from_gguf(header: GGUFHeader, where: str, name: str, *, qkv_bias: bool) -> Config:
    """Our Config from the `{arch}.*` metadata llama.cpp's converter writes, every value checked."""
    meta, keys, arch = header.meta, gguf_keys(header), header.meta.get("general.architecture")
    sizes = gguf_sizes(header, where)
    cfg = Config(arch=name, **FLAGS, qkv_bias=qkv_bias, **sizes,
                 n_kv_head=count(meta, keys["n_kv_head"], where, default=sizes["n_head"]),
                 norm_eps=positive_float(meta, f"{arch}.attention.layer_norm_rms_epsilon", where, default=1e-5),
                 rope_theta=positive_float(meta, f"{arch}.rope.freq_base", where, default=10000.0))
    check_config(cfg, keys, where)
    check_gguf_rope(meta, arch, cfg.d_head, where)
    return cfg


def check_gguf_rope(meta: dict, arch: str, d_head: int, where: str) -> None:
    """The engine rotates whole heads with plain RoPE: no partial rotation, no scaling."""
    for key in (f"{arch}.rope.dimension_count", f"{arch}.attention.key_length"):
        if meta.get(key, d_head) != d_head:
            raise CheckpointError(f"{where}: {key} = {meta[key]} differs from the head size {d_head}, "
                                  "which llmx does not support")
    scaling = meta.get(f"{arch}.rope.scaling.type", "none")
    if scaling != "none":
        raise CheckpointError(f"{where}: RoPE scaling {scaling!r} is not supported yet")


def weights_from_hf(src: TensorSource, cfg: Config) -> Weights:
    return build(src, cfg, HF_NAMES)


def weights_from_gguf(src: TensorSource, cfg: Config) -> Weights:
    return build(src, cfg, GGUF_NAMES, rope_order=unpermute_rope)


def unpermute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's reordering of query/key rows for its interleaved RoPE.

    Its converter makes the rotary pairs (i, i + d_head/2) of each head neighbours (rows 2i, 2i+1);
    the engine's apply_rope uses Hugging Face's rotate-half layout, so the rows go back here.
    w: [n_head * d_head, ...]
    """
    n_out = w.shape[0]
    return w.reshape(n_head, n_out // n_head // 2, 2, -1).swapaxes(1, 2).reshape(w.shape)


def build(src: TensorSource, cfg: Config, names: dict, rope_order=None) -> Weights:
    """The engine's weights from tensors named by `names` (+ .weight / .bias), matrices [out, in];
    rope_order(rows, n_head) puts query and key rows in rotate-half order where a format changed it."""
    if "rope_freqs.weight" in src.tensors:
        raise CheckpointError(f"{src.origin} has rope_freqs (Llama 3.1-style long-context RoPE), "
                              "which llmx does not support yet")
    d = cfg.n_embd
    embed = src.take(f"{names['embed']}.weight", (cfg.n_vocab, d))
    unembed = embed if cfg.tied else src.take(f"{names['unembed']}.weight", (cfg.n_vocab, d))
    blocks = tuple(build_block(src, cfg, {key: name.format(i=i) for key, name in names.items()}, rope_order)
                   for i in range(cfg.n_layer))
    return Weights(embed=embed, pos_embed=None, blocks=blocks,
                   ln_final=Norm(src.take(f"{names['ln_final']}.weight", (d,))), unembed=unembed)


def build_block(src: TensorSource, cfg: Config, n: dict, rope_order) -> Block:
    """One block; q, k, v fused to w_qkv [(n_head + 2 n_kv_head) d_head, d], gate and up to w_in [2 n_ff, d]."""
    d, ff, dh = cfg.n_embd, cfg.n_ff, cfg.d_head
    heads = dict(q=cfg.n_head, k=cfg.n_kv_head, v=cfg.n_kv_head)

    def part(key: str, kind: str, shape: tuple) -> np.ndarray:
        array = src.take(f"{n[key]}.{kind}", shape)
        if rope_order is None or key == "v":
            return array
        return rope_order(array.reshape(shape[0], -1), heads[key]).reshape(shape)

    w_qkv = np.concatenate([part(key, "weight", (heads[key] * dh, d)) for key in "qkv"])
    b_qkv = np.concatenate([part(key, "bias", (heads[key] * dh,)) for key in "qkv"]) if cfg.qkv_bias else None
    w_in = np.concatenate([src.take(f"{n['gate']}.weight", (ff, d)), src.take(f"{n['up']}.weight", (ff, d))])
    return Block(ln1=Norm(src.take(f"{n['ln1']}.weight", (d,))), w_qkv=Linear(w_qkv, b_qkv),
                 w_o=Linear(src.take(f"{n['w_o']}.weight", (d, cfg.n_head * dh))),
                 ln2=Norm(src.take(f"{n['ln2']}.weight", (d,))), w_in=Linear(w_in),
                 w_out=Linear(src.take(f"{n['w_out']}.weight", (d, ff))))


def tokenizer(directory: Path, n_vocab: int):
    """The folder's tokenizer.json (byte-level BPE), with tokenizer_config.json's settings and config.json's end
    tokens when present (built once, then read from llmx's cache: engine/tokenizer_cache.py)."""
    from ..hf_tokenizer import tokenizer_json_bpe
    from ..tokenizer_cache import cached_bpe

    sources = [directory / name for name in ("tokenizer.json", "tokenizer_config.json", "config.json")]
    return cached_bpe(sources, n_vocab, str(directory / "tokenizer.json"),
                      lambda: tokenizer_json_bpe(directory, n_vocab))
