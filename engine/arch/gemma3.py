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

import dataclasses
from pathlib import Path

from ..errors import CheckpointError
from ..formats.checks import MAX_CONTEXT, count, positive_float, short
from ..formats.gguf import GGUFHeader
from ..model import Block, Config, Norm, Weights
from . import llama
from .common import TensorSource, check_config, flag, gguf_keys, gguf_sizes

NAME, TITLE = "gemma3", "Gemma 3"
# config.json's model_type: the text model (Gemma3ForCausalLM), or the multimodal one whose text_config is read
MODEL_TYPES = ("gemma3_text", "gemma3")
GGUF_ARCHITECTURES = ("gemma3",)  # a GGUF file's general.architecture
TOKENIZER_FILES, OPTIONAL_TOKENIZER_FILES = ("tokenizer.json",), ("tokenizer_config.json",)
GGUF_PRE_TOKENIZER = "default"  # SentencePiece: no split before the pieces are merged
HF_KEYS = dict(llama.HF_KEYS, d_head="head_dim")
# The text model's tensors are model.layers.N...; a multimodal checkpoint's language_model.model.layers.N...
# (transformers 4) or model.language_model.layers.N... (transformers 5); its vision tower is not read.
HF_PREFIXES = ("model.", "language_model.model.", "model.language_model.")
HF_BLOCK = r"(?:language_model\.)?model\.(?:language_model\.)?layers\.(\d+)\."
FLAGS = dict(norm="rmsnorm", positions="rotary", mlp="geglu", post_norms=True, qk_norm=True)

# What GGUF files (and older or hand-written config.json files) leave out, from Hugging Face's documented
# Gemma3TextConfig defaults (llama.cpp's gemma3 loader hard-codes the same): every 6th layer is global, the
# others local with RoPE base 10,000; heads of 256; queries scaled by 1/sqrt(256).
SLIDING_WINDOW_PATTERN = 6  # Gemma3TextConfig.sliding_window_pattern; llama.cpp: hparams.set_swa_pattern(6)
ROPE_LOCAL_BASE_FREQ = 10000.0  # Gemma3TextConfig.rope_local_base_freq; llama.cpp: rope_freq_base_train_swa
ROPE_GLOBAL_BASE_FREQ = 1000000.0  # Gemma3TextConfig.rope_theta, when a file has no rope.freq_base
HEAD_DIM = QUERY_PRE_ATTN_SCALAR = 256  # Gemma3TextConfig.head_dim and .query_pre_attn_scalar
SLIDING_WINDOW = 4096  # Gemma3TextConfig.sliding_window
MAX_POSITIONS = 131072  # Gemma3TextConfig.max_position_embeddings

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


def weights_from_gguf(src: TensorSource, cfg: Config) -> Weights:
    """Llama's tensors (no reordering of query and key rows) plus the extra norms of each block (the loader keeps
    the tied embedding column-major: packed.column_major)."""
    return with_all_norms(src, cfg, GGUF_NAMES)


def with_all_norms(src: TensorSource, cfg: Config, names: dict) -> Weights:
    weights = llama.build(src, cfg, names)
    blocks = tuple(with_norms(src, cfg, blk, i, names) for i, blk in enumerate(weights.blocks))
    return Weights(embed=weights.embed, pos_embed=None, blocks=blocks, ln_final=weights.ln_final,
                   unembed=weights.unembed)


def with_norms(src: TensorSource, cfg: Config, blk: Block, i: int, names: dict = GGUF_NAMES) -> Block:
    def norm(key: str, size: int) -> Norm:
        return Norm(src.take(f"{names[key].format(i=i)}.weight", (size,)))

    return Block(ln1=blk.ln1, w_qkv=blk.w_qkv, w_o=blk.w_o, ln2=blk.ln2, w_in=blk.w_in, w_out=blk.w_out,
                 ln1_post=norm("ln1_post", cfg.n_embd), ln2_post=norm("ln2_post", cfg.n_embd),
                 q_norm=norm("q_norm", cfg.d_head), k_norm=norm("k_norm", cfg.d_head))




# Hugging Face folders: config.json (Gemma3TextConfig, or Gemma3Config with a text_config), model.safetensors.

def config_from_hf(hf: dict, where: str) -> Config:
    """Our Config from a gemma3_text config.json (or a gemma3 one's text_config), every value checked; what
    it leaves out from Gemma3TextConfig's documented defaults (above)."""
    hf = text_config(hf, where)
    refuse_unsupported(hf, where)
    sizes = {field: count(hf, HF_KEYS[field], where) for field in ("n_vocab", "n_embd", "n_layer", "n_head", "n_ff")}
    n_layer, d_head = sizes["n_layer"], count(hf, "head_dim", where, default=HEAD_DIM)
    rope_global, rope_local = rope_thetas(hf, where)
    pattern = hf.get("sliding_window_pattern", hf.get("_sliding_window_pattern"))
    cfg = Config(arch=NAME, **FLAGS, **sizes, d_head=d_head, n_kv_head=count(hf, HF_KEYS["n_kv_head"], where),
                 n_ctx=count(hf, HF_KEYS["n_ctx"], where, default=MAX_POSITIONS, limit=MAX_CONTEXT),
                 norm_eps=positive_float(hf, HF_KEYS["norm_eps"], where, default=1e-6),
                 rope_theta=rope_global, rope_local_theta=rope_local, embed_scale=sizes["n_embd"] ** 0.5,
                 query_pre_attn_scalar=positive_float(hf, "query_pre_attn_scalar", where,
                                                      default=QUERY_PRE_ATTN_SCALAR),
                 sliding_window=count(hf, "sliding_window", where, default=SLIDING_WINDOW),
                 local_layers=local_layers(layer_kinds(hf.get("layer_types"), where) or pattern, n_layer, where),
                 tied=flag(hf, "tie_word_embeddings", where, default=True))
    check_config(cfg, HF_KEYS, where)
    return cfg


def text_config(hf: dict, where: str) -> dict:
    """The text model's settings: config.json itself, or a multimodal gemma3 config's text_config."""
    if hf.get("model_type") != "gemma3":
        return hf
    text = hf.get("text_config")
    if not isinstance(text, dict) or text.get("model_type", "gemma3_text") != "gemma3_text":
        raise CheckpointError(f"{where}: a gemma3 config.json needs a text_config of model_type gemma3_text: "
                              "download the model's config.json again")
    return text


def refuse_unsupported(hf: dict, where: str) -> None:
    """What Gemma 3 never uses and llmx does not implement: soft-capping, biases, other activations."""
    for key in ("final_logit_softcapping", "attn_logit_softcapping"):
        if hf.get(key) is not None:
            raise CheckpointError(f"{where}: {key} is set, but Gemma 3 has no soft-capping and llmx does not "
                                  "implement it: is this a Gemma 2 model?")
    for key in ("attention_bias", "use_bidirectional_attention"):
        if flag(hf, key, where, default=False):
            raise CheckpointError(f"{where}: {key} is true, which llmx does not support for Gemma 3 models")
    activation = hf.get("hidden_activation", "gelu_pytorch_tanh")
    if activation not in ("gelu_pytorch_tanh", "gelu_new"):  # both name GELU's tanh approximation
        raise CheckpointError(f"{where}: hidden_activation {short(activation)} is not supported: llmx runs "
                              "Gemma 3's gelu_pytorch_tanh")


def layer_kinds(layer_types, where: str) -> list[bool] | None:
    """config.json's layer_types ("sliding_attention" or "full_attention" per block) as local-or-not."""
    if layer_types is None:
        return None
    kinds = {"sliding_attention": True, "full_attention": False}
    if not isinstance(layer_types, list) or not all(kind in kinds for kind in layer_types):
        raise CheckpointError(f"{where}: layer_types {short(layer_types)} is not a list of \"sliding_attention\" "
                              "and \"full_attention\": download the config.json again")
    return [kinds[kind] for kind in layer_types]


def rope_thetas(hf: dict, where: str) -> tuple[float, float]:
    """The RoPE bases of the global and the local layers: transformers 5 writes rope_parameters per layer
    type, transformers 4 rope_theta and rope_local_base_freq. Plain RoPE only (no scaling)."""
    parameters = hf.get("rope_parameters")
    if isinstance(parameters, dict) and {"full_attention", "sliding_attention"} <= set(parameters):
        found = [parameters[kind] for kind in ("full_attention", "sliding_attention")]
    else:
        found = [{"rope_theta": hf.get("rope_theta"), "rope_type": (hf.get("rope_scaling") or {}).get("rope_type")},
                 {"rope_theta": hf.get("rope_local_base_freq")}]
    defaults = (ROPE_GLOBAL_BASE_FREQ, ROPE_LOCAL_BASE_FREQ)
    for values in found:
        if not isinstance(values, dict) or values.get("rope_type") not in (None, "default"):
            raise CheckpointError(f"{where}: RoPE {short(values)} is not supported yet (llmx runs plain RoPE)")
    return tuple(positive_float(values, "rope_theta", where, default=d) for values, d in zip(found, defaults))


def hf_names(prefix: str) -> dict:
    """Engine name -> Hugging Face tensor name, under the checkpoint's prefix (HF_PREFIXES). Gemma's
    post_attention_layernorm is the norm *after* attention (Llama's name for the one before the MLP)."""
    names = dict(llama.HF_NAMES, ln2="model.layers.{i}.pre_feedforward_layernorm",
                 ln1_post="model.layers.{i}.post_attention_layernorm",
                 ln2_post="model.layers.{i}.post_feedforward_layernorm",
                 q_norm="model.layers.{i}.self_attn.q_norm", k_norm="model.layers.{i}.self_attn.k_norm")
    return {key: name if key == "unembed" else prefix + name.removeprefix("model.") for key, name in names.items()}


def weights_from_hf(src: TensorSource, cfg: Config) -> Weights:
    """Llama's layout with Gemma's names; each RMSNorm weight w becomes the 1 + w it multiplies by
    (transformers computes x / rms * (1 + w) in float32, so 1 + w is rounded to float32 there too)."""
    prefix = next((p for p in HF_PREFIXES if f"{p}embed_tokens.weight" in src.tensors), "model.")
    weights = with_all_norms(src, cfg, hf_names(prefix))
    return plus_one(weights)


def plus_one(weights: Weights) -> Weights:
    def shifted(norm: Norm | None) -> Norm | None:
        return None if norm is None else Norm(norm.g + norm.g.dtype.type(1))  # in the weights' own dtype

    fields = ("ln1", "ln2", "ln1_post", "ln2_post", "q_norm", "k_norm")
    blocks = tuple(dataclasses.replace(b, **{f: shifted(getattr(b, f)) for f in fields}) for b in weights.blocks)
    return dataclasses.replace(weights, blocks=blocks, ln_final=shifted(weights.ln_final))


def tokenizer(directory: Path, n_vocab: int):
    """The folder's tokenizer.json: a SentencePiece-style BPE (byte fallback, spaces as ▁), see spm_json.py."""
    from ..spm_json import tokenizer_json_sentencepiece
    from ..tokenizer_cache import cached_sentencepiece

    sources = [directory / name for name in ("tokenizer.json", "tokenizer_config.json", "config.json")]
    return cached_sentencepiece(sources, n_vocab, str(directory),
                                lambda: tokenizer_json_sentencepiece(directory, n_vocab))
