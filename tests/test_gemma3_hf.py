"""Gemma 3 Hugging Face folders: a tiny random Gemma3ForCausalLM written by transformers against transformers
(float64 logits, greedy tokens, cached decoding), its config.json's values and documented defaults, and
Gemma's tokenizer.json against transformers' tokenizer reading the same file. The tokenizer.json is the real
Gemma 3 tokenizer, written by transformers from the GGUF file (test_gemma3.py loads that tokenizer once)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import conftest
import float64
from conftest import assert_cached_decoding_equals_full_recompute
from llmx.engine import Sampling, load
from llmx.engine.arch import gemma3
from test_gemma3 import GEMMA3, HARD_TEXTS, reference_tokenizer
from test_hostile_files import hf_variant, one_line_error

# Values unlike Gemma3TextConfig's defaults, so that a value not read from config.json shows in the logits.
TINY = dict(vocab_size=262144, hidden_size=32, intermediate_size=64, num_hidden_layers=7, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24, sliding_window=4,
            max_position_embeddings=64, rms_norm_eps=1e-5, bos_token_id=2, eos_token_id=1, pad_token_id=0,
            rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 50000.0},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}})
# The tiny model's logits reach ~15 (embeddings drawn with standard deviation 1, so that greedy choices are
# not near-ties). Each is ~30 float32 operations deep (7 blocks of norms, products of up to 64 terms, a
# softmax), each rounding with relative error ~2**-24 ~ 6e-8 on values up to ~15: ~3e-5 in the worst case.
# Measured on a 2-core AVX-512 EPYC: ~2e-6.
TINY_GEMMA_TOLERANCE = 3e-5


@pytest.fixture(scope="session")
def gemma_tokenizer_dir(tmp_path_factory):
    """tokenizer.json and tokenizer_config.json of the real Gemma 3 tokenizer, as transformers writes them."""
    folder = tmp_path_factory.mktemp("gemma-tokenizer")
    reference_tokenizer(conftest.test_data(GEMMA3)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory, gemma_tokenizer_dir):
    """A 7-block Gemma 3 (blocks 0-4 and 6 local, block 5 global) with random weights: embeddings N(0, 1),
    matrices N(0, 0.2), norm weights on a 2**-10 grid (so that 1 + w is exact in float32, as in float64)."""
    folder = conftest.write_random_gemma3(tmp_path_factory.mktemp("tiny-gemma3"), TINY)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).symlink_to(gemma_tokenizer_dir / name)
    return folder


@pytest.fixture(scope="module")
def tiny_reference(tiny_gemma):
    from transformers import Gemma3ForCausalLM

    return Gemma3ForCausalLM.from_pretrained(tiny_gemma, dtype="float32").eval()


@pytest.mark.parametrize("n_tokens", [1, 7, 30])
def test_logits_match_transformers_in_float64_and_float32_is_rounding(tiny_gemma, tiny_reference, n_tokens):
    ids = np.random.default_rng(n_tokens).integers(0, TINY["vocab_size"], n_tokens).tolist()
    float64.assert_parity(load(str(tiny_gemma)), tiny_reference, ids, TINY_GEMMA_TOLERANCE)


def test_twenty_greedy_tokens_match_transformers(tiny_gemma, tiny_reference):
    import torch

    model = load(str(tiny_gemma))
    prompt = model.prompt_ids("The capital of France is")
    ours = [step.id for step in model.generate(prompt, 20, sampling=Sampling(temperature=0))]
    with torch.no_grad():
        out = tiny_reference.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False, eos_token_id=None)
    assert ours == out[0, len(prompt):].tolist() and len(ours) == 20


def test_cached_decoding_equals_full_recompute(tiny_gemma):
    """8 tokens through a 4-position window: the local layers' ring buffers wrap."""
    assert_cached_decoding_equals_full_recompute(load(str(tiny_gemma)))


def test_config_is_read_from_config_json(tiny_gemma, tiny_reference):
    cfg, hf = load(str(tiny_gemma)).config, tiny_reference.config
    assert (cfg.arch, cfg.n_embd, cfg.n_head, cfg.n_kv_head, cfg.d_head, cfg.n_ff, cfg.n_ctx) == (
        "gemma3", 32, 4, 2, 16, 64, 64)
    assert cfg.local_layers == tuple(i for i, kind in enumerate(hf.layer_types) if kind == "sliding_attention")
    assert (cfg.sliding_window, cfg.query_pre_attn_scalar, cfg.norm_eps) == (4, 24, 1e-5)
    assert (cfg.rope_theta, cfg.rope_local_theta, cfg.tied) == (50000.0, 100.0, True)


def test_missing_values_take_gemma3s_documented_defaults(tmp_path, tiny_gemma):
    """An older config.json (transformers 4: rope_theta, rope_local_base_freq, sliding_window_pattern), or one
    without them at all, gets Gemma3TextConfig's defaults."""
    settings = json.loads((tiny_gemma / "config.json").read_text())
    for key in ("layer_types", "rope_parameters", "query_pre_attn_scalar", "head_dim", "sliding_window",
                "max_position_embeddings", "_sliding_window_pattern", "sliding_window_pattern"):
        settings.pop(key, None)
    cfg = gemma3.config_from_hf(settings, "config.json")
    assert (cfg.d_head, cfg.query_pre_attn_scalar, cfg.sliding_window, cfg.n_ctx) == (256, 256, 4096, 131072)
    assert (cfg.rope_theta, cfg.rope_local_theta) == (1e6, 1e4)
    assert cfg.local_layers == (0, 1, 2, 3, 4, 6)
    old = gemma3.config_from_hf({**settings, "rope_theta": 5e5, "rope_local_base_freq": 20.0,
                                 "sliding_window_pattern": 3}, "config.json")
    assert (old.rope_theta, old.rope_local_theta, old.local_layers) == (5e5, 20.0, (0, 1, 3, 4, 6))


def test_a_multimodal_gemma3_folder_reads_its_language_model(tmp_path, tiny_gemma):
    """model_type gemma3 with a text_config, tensors under language_model.model. (the vision tower unread)."""
    from safetensors.numpy import load_file, save_file

    tensors = load_file(tiny_gemma / "model.safetensors")
    folder = tmp_path / "multimodal"
    folder.mkdir()
    save_file({f"language_model.{name}": t for name, t in tensors.items()} | {"vision_tower.x": np.zeros(2)},
              folder / "model.safetensors")
    text = json.loads((tiny_gemma / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({"model_type": "gemma3", "text_config": text}))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_gemma / name, folder / name)
    ids = [2, 651, 5279, 529, 7001, 563]
    np.testing.assert_array_equal(load(str(folder)).forward(ids)[0], load(str(tiny_gemma)).forward(ids)[0])


@pytest.mark.parametrize("change, words", [
    ({"final_logit_softcapping": 30.0}, ["final_logit_softcapping", "Gemma 2"]),
    ({"hidden_activation": "silu"}, ["hidden_activation", "gelu_pytorch_tanh"]),
    ({"layer_types": ["sliding_attention", "chunked"]}, ["layer_types"]),
    ({"rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                          "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}}, ["RoPE", "linear"]),
])
def test_what_llmx_does_not_run_is_refused_in_one_line(tmp_path, tiny_gemma, change, words):
    folder = hf_variant(tiny_gemma, tmp_path / "model", config=change)
    one_line_error(lambda: load(str(folder)), "config.json", *words)


# Gemma's tokenizer.json (SentencePiece written as a BPE with byte fallback) against transformers reading it.

@pytest.fixture(scope="module")
def json_tokenizers(gemma_tokenizer_dir):
    """llmx's and Hugging Face's (the `tokenizers` library under transformers' fast tokenizers, 3x quicker
    to load than AutoTokenizer) tokenizers of the same tokenizer.json."""
    from tokenizers import Tokenizer

    from llmx.engine.spm_json import tokenizer_json_sentencepiece

    theirs = Tokenizer.from_file(str(gemma_tokenizer_dir / "tokenizer.json"))
    theirs.encode_special_tokens = True  # control-token text is ordinary text (transformers: split_special_tokens)
    return tokenizer_json_sentencepiece(gemma_tokenizer_dir, 262144), theirs


@pytest.mark.parametrize("text", HARD_TEXTS + [" " * 40 + "x", "a" + " " * 33, "x >   </b>"])
def test_tokenization_equals_transformers(json_tokenizers, text):
    ours, theirs = json_tokenizers
    assert ours.encode(text) == theirs.encode(text).ids
    assert ours.decode(ours.encode(text)[1:]) == text.replace("\u2581", " ")


def test_tokenization_of_source_code_equals_transformers(json_tokenizers):
    ours, theirs = json_tokenizers
    text = "".join(path.read_text() for path in sorted((conftest.REPO / "engine").glob("*.py")))
    assert ours.encode(text) == theirs.encode(text).ids


def test_special_tokens_and_ends_come_from_the_folder(json_tokenizers):
    ours, _ = json_tokenizers
    assert (ours.bos_id, ours.add_bos, 1 in ours.eos_ids) == (2, True, True)
    assert ours.encode("<start_of_turn>", special=True) == [2, 105] and len(ours.encode("<start_of_turn>")) > 2


def test_long_space_runs_follow_each_files_own_reading(json_tokenizers):
    """A GGUF file's runs of spaces are user-defined pieces, found whole before BPE as SentencePiece does
    (31 + 9); transformers' tokenizer.json writes them as ordinary pieces built by merges, and llmx reads
    that file as transformers does (16 + 24). See engine/spm.py."""
    from llmx.engine.loader import load_tokenizer

    ours, _ = json_tokenizers
    from_gguf = load_tokenizer(str(conftest.test_data(GEMMA3)))
    assert [from_gguf.text(i) for i in from_gguf.encode(" " * 40)[1:]] == [" " * 31, " " * 9]
    assert [ours.text(i) for i in ours.encode(" " * 40)[1:]] == [" " * 16, " " * 24]
    text = "a  b   c    d" + " " * 31 + "e"  # up to 31, both readings agree
    assert from_gguf.encode(text) == ours.encode(text)


def test_short_texts_merged_in_python_as_tiktoken_merges_long_ones(json_tokenizers):
    """spm.py merges texts up to SHORT_TEXT characters in Python, longer ones with tiktoken: the same ranks."""
    ours, _ = json_tokenizers
    source = "".join(path.read_text() for path in sorted((conftest.REPO / "engine").glob("*.py")))
    for text in [t.replace("\u2581", " ") for t in HARD_TEXTS] + [source[:5000]]:
        assert ours.merge(text) == ours.encoding.encode_ordinary(text)


def test_the_tokenizer_cache_gives_the_tokenizer_back_and_rebuilds_a_damaged_one(tmp_path, monkeypatch,
                                                                                  json_tokenizers):
    from llmx.engine.tokenizer_cache import cached_sentencepiece

    monkeypatch.setenv("LLMX_CACHE", str(tmp_path))
    ours, _ = json_tokenizers
    source = tmp_path / "tokenizer.json"
    source.write_text("stands for the files a tokenizer is built from")
    builds = []

    def build():
        builds.append(1)
        return ours

    first = cached_sentencepiece([source], 262144, "test", build)
    again = cached_sentencepiece([source], 262144, "test", build)
    text = "Gemma's   tokens: naïve 🙂 12345 <start_of_turn>"
    assert len(builds) == 1 and again is not ours and again.encode(text) == ours.encode(text)
    assert again.decode(again.encode(text)[1:]) == text and again.encode(text, special=True) == ours.encode(
        text, special=True)
    (entry,) = tmp_path.glob("spm-*.npz")
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the stored arrays
    entry.write_bytes(bytes(data))
    assert cached_sentencepiece([source], 262144, "test", build).encode(text) == first.encode(text)
    assert len(builds) == 2


def test_building_a_tokenizer_removes_what_a_killed_writer_left(tmp_path, monkeypatch, json_tokenizers):
    import subprocess

    from llmx.engine.formats.pack import host_tag
    from llmx.engine.tokenizer_cache import cached_sentencepiece

    monkeypatch.setenv("LLMX_CACHE", str(tmp_path))
    child = subprocess.Popen(["true"])
    child.wait()  # an id whose process has exited
    killed = tmp_path / f"spm-abc.npz.{child.pid}.{host_tag()}.partial"
    killed.write_bytes(b"half a tokenizer")
    source = tmp_path / "tokenizer.json"
    source.write_text("stands for the files a tokenizer is built from")
    cached_sentencepiece([source], 262144, "test", lambda: json_tokenizers[0])
    assert not killed.exists() and len(list(tmp_path.glob("spm-*.npz"))) == 1
