"""Qwen2 (Llama plus biases on q, k and v): a tiny random checkpoint against transformers' Qwen2ForCausalLM,
and the same weights as a GGUF file written here the way llama.cpp's converter lays them out."""

from __future__ import annotations

import numpy as np
import pytest

import float64
from conftest import assert_cached_decoding_equals_full_recompute, write_tokenizer_json
from llmx.engine import Sampling, load
from llmx.engine.describe import describe
from test_gguf import gpt2_tokenizer_metadata, llama_gguf_tensors, write_gguf
from test_hostile_files import hf_variant, one_line_error

ROPE_THETA = 1e6  # Qwen2's, not the 10000 a reader falls back to: a base read wrongly shows in the logits


def write_tiny_qwen2(directory, vocab, *, tied: bool, seed: int = 0):
    """A 2-layer, 64-wide Qwen2 (4 query heads over 2 key/value heads) with random weights, random norm
    scales and random q, k, v biases (transformers starts biases at zero, which would hide a missing one)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=50257, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=ROPE_THETA,
        tie_word_embeddings=tied, bos_token_id=50256, eos_token_id=50256))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            elif name.endswith(".bias"):
                p.normal_(0, 0.5)
    model.save_pretrained(directory)
    write_tokenizer_json(directory, vocab)
    return directory


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def tiny_qwen2(request, tmp_path_factory, gpt2_vocab):
    name = "tiny-qwen2-tied" if request.param else "tiny-qwen2-untied"
    return write_tiny_qwen2(tmp_path_factory.mktemp(name), gpt2_vocab, tied=request.param)


@pytest.fixture(scope="module")
def reference(tiny_qwen2):
    from transformers import Qwen2ForCausalLM

    return Qwen2ForCausalLM.from_pretrained(tiny_qwen2, dtype="float32").eval()


@pytest.mark.parametrize("n_tokens", [1, 2, 7, 30])
def test_logits_match_transformers_in_float64_and_float32_is_rounding(tiny_qwen2, reference, n_tokens):
    model = load(str(tiny_qwen2))
    ids = np.random.default_rng(n_tokens).integers(0, 50257, n_tokens).tolist()
    float64.assert_parity(model, reference, ids)


def test_greedy_tokens_match_transformers(tiny_qwen2, reference):
    import torch

    model = load(str(tiny_qwen2))
    prompt = model.prompt_ids("Hullo, my name is")
    ours = [step.id for step in model.generate(prompt, 20, sampling=Sampling(temperature=0))]
    with torch.no_grad():
        out = reference.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False,
                                 pad_token_id=50256, eos_token_id=None)
    assert ours == out[0, len(prompt):].tolist() and len(ours) == 20


def test_cached_decoding_equals_full_recompute(tiny_qwen2):
    assert_cached_decoding_equals_full_recompute(load(str(tiny_qwen2)))


def test_config_and_weights(tiny_qwen2):
    model = load(str(tiny_qwen2))
    cfg, tied = model.config, "untied" not in tiny_qwen2.name
    assert (cfg.arch, cfg.qkv_bias, cfg.tied, cfg.rope_theta, cfg.n_kv_head, cfg.norm) == \
        ("qwen2", True, tied, ROPE_THETA, 2, "rmsnorm")
    block = model.weights.blocks[0]
    assert block.w_qkv.b.shape == ((4 + 2 * 2) * 16,) and block.w_o.b is None and block.w_in.b is None
    assert np.shares_memory(model.weights.unembed, model.weights.embed) == tied
    assert describe(tiny_qwen2)["architecture"] == "qwen2"


def test_sliding_window_attention_is_refused(tmp_path, tiny_qwen2):
    folder = hf_variant(tiny_qwen2, tmp_path / "model", config={"use_sliding_window": True, "sliding_window": 16})
    one_line_error(lambda: load(str(folder)), "config.json", "sliding-window attention", "not supported")


def test_rope_theta_and_rope_parameters_must_agree(tmp_path, tiny_qwen2):
    folder = hf_variant(tiny_qwen2, tmp_path / "model", config={"rope_theta": 10000.0})
    one_line_error(lambda: load(str(folder)), "rope_theta and rope_parameters.rope_theta disagree")


# The same weights as a GGUF file: llama.cpp's converter names them like Llama's, biases included, and
# (unlike Llama's) leaves the query and key rows in Hugging Face's order.

QWEN2_META = {"qwen2.context_length": 64, "qwen2.embedding_length": 64, "qwen2.block_count": 2,
              "qwen2.feed_forward_length": 128, "qwen2.attention.head_count": 4, "qwen2.attention.head_count_kv": 2,
              "qwen2.attention.layer_norm_rms_epsilon": 1e-6, "qwen2.rope.freq_base": ROPE_THETA}


def test_qwen2_gguf_matches_its_hf_directory(tmp_path, tiny_qwen2, gpt2_vocab):
    tensors = llama_gguf_tensors(tiny_qwen2, permute=False)
    assert "blk.1.attn_k.bias" in tensors
    path = write_gguf(tmp_path / "qwen2.gguf", "qwen2", {**QWEN2_META, **gpt2_tokenizer_metadata(gpt2_vocab, pre=None)},
                      tensors)
    gguf_model, hf_model = load(str(path)), load(str(tiny_qwen2))
    ids = [464, 3139, 286, 4881, 318, 6342, 13]
    np.testing.assert_allclose(gguf_model.forward(ids, all_logits=True)[0], hf_model.forward(ids, all_logits=True)[0],
                               atol=1e-5)
    assert gguf_model.config.rope_theta == ROPE_THETA and gguf_model.config.tied == hf_model.config.tied
    assert describe(path)["architecture"] == "qwen2"


def test_qwen2_gguf_without_a_pre_tokenizer_splits_like_qwen2(tmp_path, tiny_qwen2, gpt2_vocab):
    """A qwen2 GGUF that names no tokenizer.ggml.pre gets Qwen2's split (digits alone), not GPT-2's."""
    from tokenizers import Regex, Tokenizer, pre_tokenizers

    from llmx.engine.tokenizer import QWEN2_PATTERN

    path = write_gguf(tmp_path / "qwen2.gguf", "qwen2", {**QWEN2_META, **gpt2_tokenizer_metadata(gpt2_vocab, pre=None)},
                      llama_gguf_tensors(tiny_qwen2, permute=False))
    reference = Tokenizer.from_file(str(tiny_qwen2 / "tokenizer.json"))
    reference.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
                                                       pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    ours = load(str(path)).tokenizer
    for text in ["Hullo, my name is", "numbers: 12345 678", "I'LL say it's\n\n  done", "naïve café 🙂"]:
        assert ours.encode(text) == reference.encode(text).ids, text
    assert len(ours.encode("12345")) == 5  # every digit alone, as Qwen2 splits numbers
