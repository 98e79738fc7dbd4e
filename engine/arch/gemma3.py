"""Gemma 3 (text): Llama's skeleton with Gemma's differences, each a Config flag of the forward pass.

    embeddings scaled by sqrt(n_embd)        norms before and after attention and the MLP ("sandwich")
    RMSNorm on each query and key head       GeGLU MLP (GELU's tanh approximation on the gate)
    head size from the file (256), not n_embd / n_head; queries scaled by 1/sqrt(query_pre_attn_scalar)
    local layers attending to a sliding window, with their own RoPE base; every 6th layer global
    tied unembedding, no logit soft-capping (Gemma 2 had it; Gemma 3 has none)

Hugging Face computes Gemma's RMSNorm as x / rms * (1 + w) and stores w; llama.cpp's converter stores
1 + w, which the engine's rms_norm uses as it is (checked against transformers' GGUF loader, which
subtracts the 1 again). llama.cpp does not reorder Gemma's query and key rows (checked numerically).
"""

from __future__ import annotations

from ..errors import CheckpointError
from ..formats.checks import count, positive_float, short
from ..formats.gguf import GGUFHeader
from ..model import Block, Config, Norm, Weights
from . import llama
from .common import TensorSource, check_config, gguf_keys, gguf_sizes

NAME, TITLE = "gemma3", "Gemma 3"
MODEL_TYPES = ()  # Hugging Face folders (model_type gemma3_text) are not read yet: their tokenizer.json differs
GGUF_ARCHITECTURES = ("gemma3",)  # a GGUF file's general.architecture
TOKENIZER_FILES, OPTIONAL_TOKENIZER_FILES = (), ()
GGUF_PRE_TOKENIZER = "default"  # SentencePiece: no split before the pieces are merged
HF_KEYS, HF_BLOCK = llama.HF_KEYS, llama.HF_BLOCK
FLAGS = dict(norm="rmsnorm", positions="rotary", mlp="geglu", post_norms=True, qk_norm=True)

# What GGUF files leave out, from Hugging Face's Gemma3TextConfig (and llama.cpp's gemma3 loader, which
# hard-codes the same): every 6th layer is global, the others local with RoPE base 10,000.
SLIDING_WINDOW_PATTERN = 6  # Gemma3TextConfig.sliding_window_pattern; llama.cpp: hparams.set_swa_pattern(6)
ROPE_LOCAL_BASE_FREQ = 10000.0  # Gemma3TextConfig.rope_local_base_freq; llama.cpp: rope_freq_base_train_swa
ROPE_GLOBAL_BASE_FREQ = 1000000.0  # Gemma3TextConfig.rope_theta, when a file has no rope.freq_base

GGUF_NAMES = dict(llama.GGUF_NAMES, ln1_post="blk.{i}.post_attention_norm", ln2_post="blk.{i}.post_ffw_norm",
                  q_norm="blk.{i}.attn_q_norm", k_norm="blk.{i}.attn_k_norm")


def config_from_gguf(header: GGUFHeader, where: str) -> Config:
    """Our Config from the `gemma3.*` metadata, every value checked; documented defaults for what is missing."""
    meta, keys, arch = header.meta, gguf_keys(header), header.meta.get("general.architecture")
    for key in (f"{arch}.final_logit_softcapping", f"{arch}.attn_logit_softcapping"):
        if meta.get(key) is not None:
            raise CheckpointError(f"{where}: {key} is set, but Gemma 3 has no soft-capping and llmx does not "
                                  "implement it: is this a Gemma 2 file?")
    sizes = gguf_sizes(header, where)
    d_head = count(meta, f"{arch}.attention.key_length", where)
    if meta.get(f"{arch}.attention.value_length", d_head) != d_head:
        raise CheckpointError(f"{where}: {arch}.attention.value_length differs from key_length, which llmx "
                              "does not support")
    n_layer = sizes["n_layer"]
    cfg = Config(arch=NAME, **FLAGS, **dict(sizes, d_head=d_head),
                 n_kv_head=count(meta, keys["n_kv_head"], where, default=sizes["n_head"]),
                 norm_eps=positive_float(meta, f"{arch}.attention.layer_norm_rms_epsilon", where, default=1e-6),
                 rope_theta=positive_float(meta, f"{arch}.rope.freq_base", where, default=ROPE_GLOBAL_BASE_FREQ),
                 rope_local_theta=ROPE_LOCAL_BASE_FREQ,
                 embed_scale=sizes["n_embd"] ** 0.5,  # Gemma's normalizer, rounded to the dtype in the pass
                 # Gemma3TextConfig.query_pre_attn_scalar is the head size for 270M (and every size but 27B)
                 query_pre_attn_scalar=float(d_head),
                 sliding_window=count(meta, f"{arch}.attention.sliding_window", where, limit=sizes["n_ctx"]),
                 local_layers=local_layers(meta.get(f"{arch}.attention.sliding_window_pattern"), n_layer, where))
    check_config(cfg, keys, where)
    llama.check_gguf_rope(meta, arch, d_head, where)
    return cfg


def local_layers(pattern, n_layer: int, where: str) -> tuple[int, ...]:
    """The sliding-window blocks: from a per-layer list of booleans (newer llama.cpp files), else every
    block but each `pattern`-th (default SLIDING_WINDOW_PATTERN): with 6, blocks 5, 11, 17 are global."""
    if isinstance(pattern, list):
        if len(pattern) != n_layer or not all(isinstance(p, bool) for p in pattern):
            raise CheckpointError(f"{where}: sliding_window_pattern {short(pattern)} is not one true or false per "
                                  "block: the file is damaged")
        return tuple(i for i, local in enumerate(pattern) if local)
    every = count({"pattern": pattern}, "pattern", where, default=SLIDING_WINDOW_PATTERN)
    return tuple(i for i in range(n_layer) if (i + 1) % every)


def config_from_hf(hf: dict, where: str) -> Config:
    raise CheckpointError(f"{where}: Gemma 3 Hugging Face folders are not supported yet: use its GGUF file")


def weights_from_hf(src: TensorSource, cfg: Config) -> Weights:
    raise CheckpointError(f"{src.origin}: Gemma 3 Hugging Face folders are not supported yet: use its GGUF file")


def weights_from_gguf(src: TensorSource, cfg: Config) -> Weights:
    """Llama's tensors (no reordering of query and key rows) plus the extra norms of each block."""
    weights = llama.build(src, cfg, llama.GGUF_NAMES)
    blocks = tuple(with_norms(src, cfg, blk, i) for i, blk in enumerate(weights.blocks))
    return Weights(embed=weights.embed, pos_embed=None, blocks=blocks, ln_final=weights.ln_final,
                   unembed=weights.unembed)


def with_norms(src: TensorSource, cfg: Config, blk: Block, i: int) -> Block:
    def norm(key: str, size: int) -> Norm:
        return Norm(src.take(f"{GGUF_NAMES[key].format(i=i)}.weight", (size,)))

    return Block(ln1=blk.ln1, w_qkv=blk.w_qkv, w_o=blk.w_o, ln2=blk.ln2, w_in=blk.w_in, w_out=blk.w_out,
                 ln1_post=norm("ln1_post", cfg.n_embd), ln2_post=norm("ln2_post", cfg.n_embd),
                 q_norm=norm("q_norm", cfg.d_head), k_norm=norm("k_norm", cfg.d_head))


def tokenizer(directory, n_vocab: int):
    raise CheckpointError(f"{directory}: Gemma 3 Hugging Face folders are not supported yet: use its GGUF file")
