"""Byte-level BPE tokenizers from Hugging Face model folders: GPT-2's vocab.json and merges.txt, and tokenizer.json
with tokenizer_config.json's settings (the SentencePiece kind of tokenizer.json is spm_json.py's)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .errors import TokenizerError
from .formats.hf import read_json
from .tokenizer import BPE, GPT2_EOT, GPT2_PATTERN, SMOLLM_PATTERN, UNICODE_FORMS, Tokenizer, bpe


def gpt2_tokenizer(directory: Path, n_vocab: int) -> Tokenizer:
    """GPT-2's byte-level BPE from the checkpoint's own vocab.json and merges.txt."""
    return gpt2_bpe(directory, n_vocab).tokenizer()


def gpt2_bpe(directory: Path, n_vocab: int) -> BPE:
    """What gpt2_tokenizer is built from."""
    vocab_path, merges_path = directory / "vocab.json", directory / "merges.txt"
    for path in (vocab_path, merges_path):
        if not path.is_file():
            raise TokenizerError(f"{directory} has no {path.name}: a GPT-2 checkpoint needs vocab.json and merges.txt")
    vocab = _read_json(vocab_path)
    try:
        merges = [line for line in merges_path.read_text(encoding="utf-8").split("\n")
                  if line and not line.startswith("#version")]
    except UnicodeDecodeError:
        raise TokenizerError(f"{merges_path} is not UTF-8 text: download it again") from None
    eot = vocab.get(GPT2_EOT, len(vocab))  # <|endoftext|> follows the BPE tokens when vocab.json omits it
    return bpe(vocab, merges, {GPT2_EOT: eot}, GPT2_PATTERN, n_vocab=n_vocab, bos=None, eos={eot}, add_bos=False,
               where=str(directory))


def tokenizer_json_tokenizer(directory: Path, n_vocab: int) -> Tokenizer:
    """A Hub tokenizer.json (byte-level BPE), with tokenizer_config.json's BOS/EOS settings when present."""
    return tokenizer_json_bpe(directory, n_vocab).tokenizer()


def tokenizer_json_bpe(directory: Path, n_vocab: int) -> BPE:
    """What tokenizer_json_tokenizer is built from."""
    where = str(directory / "tokenizer.json")
    data = _read_json(directory / "tokenizer.json")
    settings = _read_json(directory / "tokenizer_config.json") if (directory / "tokenizer_config.json").is_file() else {}
    model, normalizer = data.get("model") or {}, data.get("normalizer") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or normalizer.get("type", "NFC") not in UNICODE_FORMS:
        raise TokenizerError(f"{where}: a {model.get('type')} model with normalizer {data.get('normalizer')} is not "
                             "supported; llmx runs byte-level BPE tokenizers (GPT-2, SmolLM, Llama 3, Qwen2 style)")
    pattern = pattern_from_pre_tokenizer(data.get("pre_tokenizer"), where)
    vocab = model.get("vocab", {})
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]  # "a b" or ["a", "b"]
    special = {t["content"]: t["id"] for t in data.get("added_tokens", [])}
    ids = {**vocab, **special}
    template_bos = _template_bos(data.get("post_processor"))
    bos_text = _token_text(settings.get("bos_token")) or template_bos
    eos = {ids[t] for t in [_token_text(settings.get("eos_token"))] if t in ids} | _config_eos(directory)
    spec = bpe(vocab, merges, special, pattern, n_vocab=n_vocab, bos=ids.get(bos_text), eos=eos,
               add_bos=bool(settings.get("add_bos_token", template_bos is not None)), where=where)
    return dataclasses.replace(spec, normalization=normalizer.get("type"))


def pattern_from_pre_tokenizer(pre: dict | None, where: str) -> str:
    """The split regex of a tokenizer.json pre_tokenizer: ByteLevel, Digits + ByteLevel, or Split + ByteLevel."""
    steps = pre.get("pretokenizers", []) if pre and pre.get("type") == "Sequence" else [pre or {}]
    kinds = [step.get("type") for step in steps]
    byte_level = steps[-1]
    if kinds[-1:] == ["ByteLevel"] and not byte_level.get("add_prefix_space"):
        if kinds == ["ByteLevel"] and byte_level.get("use_regex", True):
            return GPT2_PATTERN
        if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and byte_level.get("use_regex", True):
            return SMOLLM_PATTERN
        split = steps[0]
        if (kinds == ["Split", "ByteLevel"] and "Regex" in split.get("pattern", {}) and not byte_level.get("use_regex")
                and split.get("behavior") == "Isolated" and not split.get("invert")):
            return split["pattern"]["Regex"]
    raise TokenizerError(f"{where}: pre-tokenizer {' + '.join(map(str, kinds))} "
                         f"({json.dumps(pre)[:120]}) is not supported; llmx reads ByteLevel, "
                         "Digits + ByteLevel and Split + ByteLevel (without add_prefix_space)")


def _template_bos(post_processor: dict | None) -> str | None:
    """The special token a TemplateProcessing post-processor puts before every text, if any."""
    steps = (post_processor or {}).get("processors", [post_processor or {}])
    for step in steps:
        if step.get("type") == "TemplateProcessing" and step.get("single"):
            first = step["single"][0]
            return first["SpecialToken"]["id"] if "SpecialToken" in first else None
    return None


def _token_text(token) -> str | None:
    """tokenizer_config.json writes a token as its text or as {"content": text, ...}."""
    return token.get("content") if isinstance(token, dict) else token


def _config_eos(directory: Path) -> set[int]:
    """config.json's eos_token_id (one id or a list), which may name more end tokens than the tokenizer."""
    path = directory / "config.json"
    value = _read_json(path).get("eos_token_id") if path.is_file() else None
    return set(value) if isinstance(value, list) else ({value} if isinstance(value, int) else set())


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise TokenizerError(f"{path.parent} has no {path.name}: download the model's tokenizer files again")
    data = read_json(path)  # any file Python cannot parse, or parses badly, is one clean error
    if not isinstance(data, dict):
        raise TokenizerError(f"{path} is a JSON {type(data).__name__}, not an object: download it again")
    return data
