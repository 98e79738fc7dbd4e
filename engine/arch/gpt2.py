"""GPT-2: LayerNorm, learned positions, a GELU MLP, biases everywhere, tied embeddings.

Hugging Face checkpoints store each matrix as Conv1D's [in, out] (used here as transposed views, which
engine/packed.py repacks once); llama.cpp's GGUF converter already wrote them [out, in].
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import CheckpointError
from ..formats.checks import MAX_CONTEXT, count, positive_float, short
from ..formats.gguf import GGUFHeader
from ..model import Block, Config, Linear, Norm, Weights
from .common import TensorSource, check_config, flag, gguf_keys, gguf_sizes

NAME, TITLE = "gpt2", "GPT-2"
MODEL_TYPES = ("gpt2",)  # config.json's model_type
GGUF_ARCHITECTURES = ("gpt2",)  # a GGUF file's general.architecture
TOKENIZER_FILES, OPTIONAL_TOKENIZER_FILES = ("vocab.json", "merges.txt"), ()
GGUF_PRE_TOKENIZER = "gpt-2"  # llama.cpp's name for GPT-2's own split, when a file has no tokenizer.ggml.pre
FLAGS = dict(norm="layernorm", positions="learned", mlp="gelu", qkv_bias=True)

# Config field -> its config.json key (the key names appear in errors).
HF_KEYS = dict(n_vocab="vocab_size", n_ctx="n_positions", n_embd="n_embd", n_layer="n_layer", n_head="n_head",
               n_kv_head="n_head", n_ff="n_inner", norm_eps="layer_norm_epsilon")
HF_BLOCK = r"(?:transformer\.)?h\.(\d+)\."  # captures the block number of a tensor name
# Engine name -> checkpoint name; `{i}` is the block number. Norms and linears get .weight and .bias.
HF_NAMES = dict(embed="wte.weight", pos_embed="wpe.weight", ln_final="ln_f", unembed="lm_head.weight",
                ln1="h.{i}.ln_1", w_qkv="h.{i}.attn.c_attn", w_o="h.{i}.attn.c_proj", ln2="h.{i}.ln_2",
                w_in="h.{i}.mlp.c_fc", w_out="h.{i}.mlp.c_proj")
GGUF_NAMES = dict(embed="token_embd.weight", pos_embed="position_embd.weight", ln_final="output_norm",
                  unembed="output.weight", ln1="blk.{i}.attn_norm", w_qkv="blk.{i}.attn_qkv",
                  w_o="blk.{i}.attn_output", ln2="blk.{i}.ffn_norm", w_in="blk.{i}.ffn_up", w_out="blk.{i}.ffn_down")


def config_from_hf(hf: dict, where: str) -> Config:
    """Our Config from GPT-2's config.json, every value checked before use."""
    if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise CheckpointError(f"{where}: activation {short(hf['activation_function'])} is not supported "
                              "(llmx runs GPT-2's gelu_new)")
    n_embd, n_head = count(hf, HF_KEYS["n_embd"], where), count(hf, HF_KEYS["n_head"], where)
    cfg = Config(arch=NAME, **FLAGS, d_head=n_embd // n_head, n_vocab=count(hf, HF_KEYS["n_vocab"], where),
                 n_embd=n_embd, n_ctx=count(hf, HF_KEYS["n_ctx"], where, limit=MAX_CONTEXT),
                 n_layer=count(hf, HF_KEYS["n_layer"], where), n_head=n_head, n_kv_head=n_head,
                 n_ff=count(hf, HF_KEYS["n_ff"], where, default=4 * n_embd),
                 norm_eps=positive_float(hf, HF_KEYS["norm_eps"], where, default=1e-5),
                 tied=flag(hf, "tie_word_embeddings", where, default=True))
    check_config(cfg, HF_KEYS, where)
    return cfg


def config_from_gguf(header: GGUFHeader, where: str) -> Config:
    """Our Config from the `gpt2.*` metadata llama.cpp's converter writes, every value checked."""
    sizes = gguf_sizes(header, where)
    cfg = Config(arch=NAME, **FLAGS, **sizes, n_kv_head=sizes["n_head"],
                 norm_eps=positive_float(header.meta, "gpt2.attention.layer_norm_epsilon", where, default=1e-5))
    check_config(cfg, gguf_keys(header), where)
    return cfg


def weights_from_hf(src: TensorSource, cfg: Config) -> Weights:
    """Tensors with or without the `transformer.` prefix; Conv1D matrices become [out, in] views, no copy."""
    tensors = {name.removeprefix("transformer."): t for name, t in src.tensors.items()}
    return build(dataclasses.replace(src, tensors=tensors), cfg, HF_NAMES, conv1d=True)


def weights_from_gguf(src: TensorSource, cfg: Config) -> Weights:
    return build(src, cfg, GGUF_NAMES, conv1d=False)


def build(src: TensorSource, cfg: Config, names: dict, *, conv1d: bool) -> Weights:
    """The engine's weights from tensors named by `names`; conv1d: matrices stored [in, out]."""
    d, ff = cfg.n_embd, cfg.n_ff

    def norm(stem: str) -> Norm:
        return Norm(src.take(f"{stem}.weight", (d,)), src.take(f"{stem}.bias", (d,)))

    def linear(stem: str, n_out: int, n_in: int) -> Linear:
        w = src.take(f"{stem}.weight", (n_in, n_out)).T if conv1d else src.take(f"{stem}.weight", (n_out, n_in))
        return Linear(w, src.take(f"{stem}.bias", (n_out,)))  # w: [out, in]

    def block(i: int) -> Block:
        n = {key: name.format(i=i) for key, name in names.items()}
        return Block(ln1=norm(n["ln1"]), w_qkv=linear(n["w_qkv"], 3 * d, d), w_o=linear(n["w_o"], d, d),
                     ln2=norm(n["ln2"]), w_in=linear(n["w_in"], ff, d), w_out=linear(n["w_out"], d, ff))

    embed = src.take(names["embed"], (cfg.n_vocab, d))
    unembed = embed if cfg.tied else src.take(names["unembed"], (cfg.n_vocab, d))
    return Weights(embed=embed, pos_embed=src.take(names["pos_embed"], (cfg.n_ctx, d)),
                   blocks=tuple(block(i) for i in range(cfg.n_layer)), ln_final=norm(names["ln_final"]),
                   unembed=unembed)


def tokenizer(directory: Path, n_vocab: int):
    """GPT-2's byte-level BPE from the folder's vocab.json and merges.txt (built once, then read from llmx's
    cache: engine/tokenizer_cache.py)."""
    from ..hf_tokenizer import gpt2_bpe
    from ..tokenizer_cache import cached_bpe

    sources = [directory / name for name in ("vocab.json", "merges.txt")]
    return cached_bpe(sources, n_vocab, str(directory), lambda: gpt2_bpe(directory, n_vocab))
