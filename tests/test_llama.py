"""Llama checkpoints in the Hugging Face layout: a tiny random model against transformers, and tokenizer.json."""

from __future__ import annotations

import numpy as np
import pytest

import float64
from conftest import GPT2_EOT, assert_cached_decoding_equals_full_recompute, write_tokenizer_json
from llmx.engine import KVCache, TokenizerError, load
from llmx.engine.describe import describe
from llmx.engine.hf_tokenizer import tokenizer_json_tokenizer

TEXTS = [
    "Hullo, my name is",
    "  leading spaces and trailing   ",
    "numbers: 12345 678, 3.14159 and x  1 or\t\t22",
    "new\nlines\n\n\n  indented\r\nwindows",
    "unicode: naïve café, Ελληνικά, 日本語のテキスト, emoji 🙂👍🏽 and 🇫🇷",
    "I'll say it's DON'T we've THEY'RE",
    "def f(x):\n    return x ** 2  # square\n",
]


@pytest.fixture(scope="session")
def reference(tiny_llama):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(tiny_llama, dtype="float32").eval()


@pytest.mark.parametrize("n_tokens", [1, 2, 7, 30])
def test_logits_match_transformers_in_float64_and_float32_is_rounding(tiny_llama, reference, n_tokens):
    model = load(str(tiny_llama))
    ids = np.random.default_rng(n_tokens).integers(0, 50257, n_tokens).tolist()
    float64.assert_parity(model, reference, ids)


def test_config_reads_grouped_query_attention(tiny_llama):
    cfg = load(str(tiny_llama)).config
    assert (cfg.arch, cfg.n_head, cfg.n_kv_head, cfg.d_head, cfg.n_ff) == ("llama", 4, 2, 16, 128)


def test_tied_and_untied_unembedding(tiny_llama):
    from llmx.engine.formats.safetensors import read_header

    tied = "untied" not in tiny_llama.name
    assert ("lm_head.weight" in read_header(tiny_llama / "model.safetensors")[0]) == (not tied)
    weights = load(str(tiny_llama)).weights
    assert np.shares_memory(weights.unembed, weights.embed) == tied


def test_cached_decoding_equals_full_recompute(tiny_llama):
    assert_cached_decoding_equals_full_recompute(load(str(tiny_llama)))


def test_describe_hf_directory(tiny_llama):
    info = describe(tiny_llama)
    n_params = sum(p.numel() for p in _torch_params(tiny_llama))
    assert info["parameters"] == n_params
    assert (info["architecture"], info["quantization"], info["n_kv_head"], info["vocab_size"]) == \
        ("llama", "F32", 2, 50257)
    assert info["file_size"] == (tiny_llama / "model.safetensors").stat().st_size


def _torch_params(directory):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(directory)
    return {p.data_ptr(): p for p in model.parameters()}.values()  # a tied matrix counts once


# Tokenizers from tokenizer.json, against the `tokenizers` library reading the same file.

@pytest.mark.parametrize("pre", ["bytelevel", "digits", "split"])
def test_tokenizer_json_matches_tokenizers(tmp_path, gpt2_vocab, pre):
    from tokenizers import Tokenizer as Reference

    write_tokenizer_json(tmp_path, gpt2_vocab, pre)
    ours, reference = tokenizer_json_tokenizer(tmp_path, 50257), Reference.from_file(str(tmp_path / "tokenizer.json"))
    for text in TEXTS:
        assert ours.encode(text) == reference.encode(text).ids, text


def test_an_nfc_normalizer_is_applied_before_splitting(tmp_path, gpt2_vocab):
    """Qwen2's tokenizer.json puts text in NFC first: a decomposed é (e + U+0301) becomes one character."""
    from tokenizers import Tokenizer as Reference

    write_tokenizer_json(tmp_path, gpt2_vocab, "split", nfc=True)
    ours, reference = tokenizer_json_tokenizer(tmp_path, 50257), Reference.from_file(str(tmp_path / "tokenizer.json"))
    decomposed = "Les e\u0301le\u0300ves, Å (A\u030a), ﬁ"
    assert ours.encode(decomposed) == reference.encode(decomposed).ids == ours.encode("Les élèves, Å (Å), ﬁ")
    for text in TEXTS:
        assert ours.encode(text) == reference.encode(text).ids, text


def test_digits_pre_tokenizer_keeps_spaces_before_digits_together(tmp_path, gpt2_vocab):
    """Digits are split off first, so the spaces before a digit stay one piece (GPT-2's pattern alone splits them)."""
    from tokenizers import Tokenizer as Reference

    write_tokenizer_json(tmp_path, gpt2_vocab, "digits")
    ours, reference = tokenizer_json_tokenizer(tmp_path, 50257), Reference.from_file(str(tmp_path / "tokenizer.json"))
    assert 352 not in ours.encode("x  1")  # " 1" (352), the piece GPT-2's pattern alone would make
    for text in ["x  1", "x   12", " 1", "  1", "\n\n 1", "a \t 2b", "1 2  3   4", "x　 5", "½ ¾  ⅓"]:
        assert ours.encode(text) == reference.encode(text).ids, text


def test_bos_from_post_processor_template(tmp_path, gpt2_vocab):
    from tokenizers import Tokenizer as Reference

    write_tokenizer_json(tmp_path, gpt2_vocab, bos_template=True)
    ours = tokenizer_json_tokenizer(tmp_path, 50257)
    reference = Reference.from_file(str(tmp_path / "tokenizer.json"))
    assert ours.encode("Hullo") == reference.encode("Hullo").ids == [50256, 39, 724, 78]


def test_tokenizer_matches_transformers(tiny_llama):
    from transformers import AutoTokenizer

    ours, reference = load(str(tiny_llama)).tokenizer, AutoTokenizer.from_pretrained(tiny_llama)
    for text in TEXTS:
        assert ours.encode(text) == reference.encode(text), text
        assert ours.decode(ours.encode(text)) == text
    special = f"{GPT2_EOT}one{GPT2_EOT} two"
    assert ours.encode(special, special=True) == reference.encode(special)
    assert ours.encode(special) != reference.encode(special)  # special-token text is plain text by default
    assert ours.eos_ids == {50256}


def test_unsupported_pre_tokenizer_is_one_line(tmp_path, gpt2_vocab):
    import json

    write_tokenizer_json(tmp_path, gpt2_vocab)
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    data["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"}
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(TokenizerError, match="Metaspace") as error:
        tokenizer_json_tokenizer(tmp_path, 50257)
    assert "\n" not in str(error.value)


def test_empty_cache_is_reusable(tiny_llama):
    model = load(str(tiny_llama))
    cache = KVCache.empty(model.config)
    first, _ = model.forward([1, 2, 3], cache)
    again, _ = model.forward([1, 2, 3], cache)
    np.testing.assert_array_equal(first, again)
