"""A GGUF base's configuration and tokenizer written as Hugging Face files (config.json, tokenizer.json or
vocab.json + merges.txt), so that a model fine-tuned from a .gguf file can be saved as a folder that llmx and
transformers load."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError
from ..formats import gguf
from ..model import Config
from ..tokenizer import GGUF_CONTROL, GGUF_USER_DEFINED, Tokenizer
from .spmfiles import sentencepiece_tokenizer_json

BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}


def config_json(cfg: Config, tokenizer: Tokenizer) -> dict:
    """config.json for the engine's Config: GPT-2's keys, or Llama's (Qwen2's) keys."""
    eos = min(tokenizer.eos_ids) if tokenizer.eos_ids else None
    if cfg.arch == "gpt2":
        return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": cfg.n_vocab,
                "n_positions": cfg.n_ctx, "n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "n_head": cfg.n_head,
                "n_inner": cfg.n_ff, "layer_norm_epsilon": cfg.norm_eps, "activation_function": "gelu_new",
                "tie_word_embeddings": cfg.tied, "bos_token_id": tokenizer.bos_id, "eos_token_id": eos}
    if cfg.arch == "gemma3":
        return gemma3_config_json(cfg, tokenizer)
    if cfg.arch not in ("llama", "qwen2"):
        raise InputError(f"llmx cannot write a config.json for {cfg.arch} yet: save the LoRA adapter instead")
    return {"architectures": ["LlamaForCausalLM" if cfg.arch == "llama" else "Qwen2ForCausalLM"],
            "model_type": cfg.arch, "vocab_size": cfg.n_vocab, "hidden_size": cfg.n_embd,
            "intermediate_size": cfg.n_ff, "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head,
            "num_key_value_heads": cfg.n_kv_head, "max_position_embeddings": cfg.n_ctx, "rms_norm_eps": cfg.norm_eps,
            "rope_theta": cfg.rope_theta, "tie_word_embeddings": cfg.tied, "hidden_act": "silu",
            "bos_token_id": tokenizer.bos_id, "eos_token_id": eos}


def gemma3_config_json(cfg: Config, tokenizer: Tokenizer) -> dict:
    """A Gemma3TextConfig with every value llmx read (arch.gemma3.config_from_hf reads each back): the RoPE bases
    in transformers 5's rope_parameters and in transformers 4's rope_theta and rope_local_base_freq."""
    kinds = ["sliding_attention" if i in cfg.local_layers else "full_attention" for i in range(cfg.n_layer)]
    local_theta = cfg.rope_local_theta or cfg.rope_theta
    return {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "vocab_size": cfg.n_vocab,
            "hidden_size": cfg.n_embd, "intermediate_size": cfg.n_ff, "num_hidden_layers": cfg.n_layer,
            "num_attention_heads": cfg.n_head, "num_key_value_heads": cfg.n_kv_head, "head_dim": cfg.d_head,
            "max_position_embeddings": cfg.n_ctx, "rms_norm_eps": cfg.norm_eps,
            "query_pre_attn_scalar": whole(cfg.query_pre_attn_scalar or cfg.d_head),  # transformers wants an int
            "sliding_window": cfg.sliding_window or cfg.n_ctx, "layer_types": kinds,
            "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": cfg.rope_theta},
                                "sliding_attention": {"rope_type": "default", "rope_theta": local_theta}},
            "rope_theta": cfg.rope_theta, "rope_local_base_freq": local_theta,
            "hidden_activation": "gelu_pytorch_tanh", "final_logit_softcapping": None,
            "attn_logit_softcapping": None, "attention_bias": False, "tie_word_embeddings": cfg.tied,
            "bos_token_id": tokenizer.bos_id, "eos_token_id": min(tokenizer.eos_ids) if tokenizer.eos_ids else None}


def whole(value: float):
    """An integral float as an int (a config field transformers types as int), anything else as it is."""
    return int(value) if float(value).is_integer() else value


def pre_tokenizer(pre: str, pattern: str) -> dict:
    """The tokenizer.json pre_tokenizer that splits text as llama.cpp's `pre` does."""
    if pre == "gpt-2":
        return BYTE_LEVEL
    if pre == "smollm":
        return {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, BYTE_LEVEL]}
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
        {**BYTE_LEVEL, "use_regex": False}]}


def tokenizer_json(meta: dict, tokenizer: Tokenizer, pattern: str, pre: str) -> dict:
    """tokenizer.json for the byte-level BPE in a GGUF file's tokenizer.ggml.* metadata."""
    tokens, merges = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.merges"]
    types = meta.get("tokenizer.ggml.token_type") or []
    special = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
                "special": True} for i, (t, kind) in enumerate(zip(tokens, types))
               if kind in (GGUF_CONTROL, GGUF_USER_DEFINED)]
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": special, "normalizer": None,
            "pre_tokenizer": pre_tokenizer(pre, pattern), "post_processor": bos_template(tokens, tokenizer),
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": {t: i for i, t in enumerate(tokens)}, "merges": list(merges)}}


def bos_template(tokens: list[str], tokenizer: Tokenizer) -> dict | None:
    """The post-processor that puts BOS before every text, for a tokenizer that adds it; else None."""
    if not tokenizer.add_bos or tokenizer.bos_id is None:
        return None
    bos = tokens[tokenizer.bos_id]
    return {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                                                      {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [tokenizer.bos_id], "tokens": [bos]}}}


def write_gguf_companions(directory: Path, path: Path, cfg: Config, tokenizer: Tokenizer, default_pre) -> None:
    """config.json and the tokenizer files of the GGUF file `path`, into the model folder `directory`."""
    from ..tokenizer import PRE_PATTERNS

    meta = gguf.read_gguf_header(path, arrays=gguf.TOKENIZER_ARRAYS).meta
    pre = meta.get("tokenizer.ggml.pre", default_pre)
    write_json(directory / "config.json", config_json(cfg, tokenizer))
    names = {i: t for i, t in enumerate(meta["tokenizer.ggml.tokens"])}
    bos, eos = names.get(tokenizer.bos_id), names.get(min(tokenizer.eos_ids)) if tokenizer.eos_ids else None
    if cfg.arch == "gpt2":  # llmx and transformers read GPT-2's tokenizer from vocab.json and merges.txt
        write_json(directory / "vocab.json", {t: i for i, t in names.items()})
        (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(meta["tokenizer.ggml.merges"]) + "\n",
                                              encoding="utf-8")
        return
    if meta.get("tokenizer.ggml.model") == "llama":  # SentencePiece (Gemma's)
        data = sentencepiece_tokenizer_json(meta, bos_template(meta["tokenizer.ggml.tokens"], tokenizer), str(path))
    else:
        data = tokenizer_json(meta, tokenizer, PRE_PATTERNS[pre], pre)
    write_json(directory / "tokenizer.json", data)
    write_json(directory / "tokenizer_config.json", {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos,
                                                     "eos_token": eos, "add_bos_token": tokenizer.add_bos})


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
