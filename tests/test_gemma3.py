"""Gemma 3 270M (Q4_K_M GGUF from PyPI) against transformers reading the same file: configuration,
K-quant dequantization, logits, greedy tokens, the SentencePiece tokenizer, sliding windows, and the
commands on it. transformers takes ~50 s to load the file, so it is loaded once per test session."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest

import conftest
import float64
from llmx.engine import Sampling, load
from llmx.engine.formats import gguf

GEMMA3 = "gemma-3-270m-q4_k_m.gguf"
PROMPTS = ["The capital of France is", "Les élèves 🙂 ont 12345 678\n\n\n   et   puis",
           "日本語のテキスト، العربية, Ελληνικά 🇫🇷👍🏽", "def fib(n):\n\treturn n if n < 2 else fib(n - 1) + fib(n - 2)\n"]
# Tokenization corpus: leading spaces, runs of spaces and newlines, tabs, Unicode, emoji, digits, code, and
# control-token text, which is ordinary text unless asked for (transformers: split_special_tokens=True).
HARD_TEXTS = [
    "The capital of France is", " leading space", "   three leading spaces", "a  b   c    d" + " " * 31 + "e",
    "new\nlines\n\n\nand\r\nwindows\n", "\ttabs\t\there\t", "trailing   ", "  \n  \n \n",
    "unicode: naïve café, Ελληνικά, 日本語のテキスト, Привет мир, ǅ ﬁ Å Å", "emoji 🙂👍🏽 and 🇫🇷 🤖 👨‍👩‍👧",
    "digits 12345 678 3.14159 1,000,000 ١٢٣", "def f(x):\n    return x ** 2  # square\n\n\nclass A:\n\tpass\n",
    "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model", "<bos>literal <eos> <pad> <unk>",
    "<table><tr><td>x</td></tr></table> <b> </b>", "▁literal▁pieces", "\x04control\x00bytes",
    "plane 4: \U00040000 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "x" * 60 + " y" * 30, "",
]
# How far float32 logits may be from the exact (float64) ones. Gemma's logits reach ~40 here, and each
# passes 18 blocks of products summing up to 2048 terms, with norms after every sublayer rescaling what
# rounding left. Measured on a 2-core AVX-512 EPYC over PROMPTS: llmx 5.8e-5, transformers' own float32
# 5.5e-5. The bound leaves ~10x for other BLAS kernels and thread counts, as SmolLM2 needed (test_gguf.py).
GEMMA_FLOAT32_TOLERANCE = 5e-4


@pytest.fixture(scope="session")
def gemma_path():
    return conftest.test_data(GEMMA3)


@pytest.fixture(scope="session")
def gemma(gemma_path):
    return load(str(gemma_path))


@pytest.fixture(scope="session")
def gemma_reference(gemma_path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(gemma_path.parent, gguf_file=gemma_path.name,
                                                dtype="float32").eval()


@functools.cache
def reference_tokenizer(path):
    """transformers' tokenizer of the GGUF file (~17 s): once per session, shared with test_gemma3_hf.py."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


@pytest.fixture(scope="session")
def gemma_reference_tokenizer(gemma_path):
    return reference_tokenizer(gemma_path)


@pytest.fixture(scope="module")
def gemma64(gemma):
    return float64.llmx_float64(gemma)


@pytest.fixture(scope="module")
def gemma_reference64(gemma_reference):
    return float64.transformers_float64(gemma_reference)


def test_config_agrees_with_transformers(gemma, gemma_reference):
    """Every constant, including those the GGUF leaves out (taken from Gemma 3's documented defaults)."""
    cfg, hf = gemma.config, gemma_reference.config
    assert (cfg.n_vocab, cfg.n_ctx, cfg.n_embd, cfg.n_layer, cfg.n_head, cfg.n_kv_head, cfg.n_ff, cfg.d_head) == (
        hf.vocab_size, hf.max_position_embeddings, hf.hidden_size, hf.num_hidden_layers, hf.num_attention_heads,
        hf.num_key_value_heads, hf.intermediate_size, hf.head_dim)
    assert cfg.local_layers == tuple(i for i, kind in enumerate(hf.layer_types) if kind == "sliding_attention")
    assert cfg.local_layers == (0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16)
    assert cfg.sliding_window == hf.sliding_window == 512
    assert cfg.rope_theta == hf.rope_parameters["full_attention"]["rope_theta"] == 1e6
    assert cfg.rope_local_theta == hf.rope_parameters["sliding_attention"]["rope_theta"] == 1e4
    assert cfg.query_pre_attn_scalar == hf.query_pre_attn_scalar
    assert cfg.norm_eps == hf.rms_norm_eps and cfg.tied and hf.tie_word_embeddings
    assert cfg.embed_scale == pytest.approx(hf.hidden_size ** 0.5)
    assert hf.final_logit_softcapping is None and hf.attn_logit_softcapping is None
    assert hf.hidden_activation == "gelu_pytorch_tanh" and cfg.mlp == "geglu"


@pytest.mark.parametrize("kind", ["Q4_K", "Q5_0", "Q6_K", "Q8_0"])
def test_k_quants_dequantize_as_transformers_does(gemma, gemma_reference, gemma_path, kind):
    """One tensor of each quantized type, as llmx reads it and as transformers' GGUF loader (gguf's
    GGUFReader + gguf.quants) did, bit for bit."""
    names = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj"}
    header = gguf.read_gguf_header(gemma_path, arrays=False)
    tensor = next(t for t in header.tensors if t.kind.name == kind)
    if tensor.name == "token_embd.weight":
        hf_name = "model.embed_tokens.weight"
    else:
        block, part = tensor.name.split(".")[1:3]
        hf_name = f"model.layers.{block}.{names[part]}.weight"
    memory = np.asarray(np.memmap(gemma_path, dtype=np.uint8, mode="r"))
    ours = gguf.dequantize_tensor(memory, header.data_start, tensor, gemma_path)
    np.testing.assert_array_equal(ours, gemma_reference.state_dict()[hf_name].numpy())


@pytest.mark.parametrize("prompt", PROMPTS)
def test_logits_float64_equal_transformers(gemma, gemma64, gemma_reference64, prompt):
    ids = gemma.tokenizer.encode(prompt)
    exact = gemma64.forward(ids, all_logits=True)[0]
    np.testing.assert_allclose(exact, float64.logits(gemma_reference64, ids), rtol=0,
                               atol=float64.float64_tolerance(GEMMA_FLOAT32_TOLERANCE))
    np.testing.assert_allclose(gemma.forward(ids, all_logits=True)[0], exact, rtol=0, atol=GEMMA_FLOAT32_TOLERANCE)


def test_greedy_continuation_is_the_known_one(gemma):
    """transformers and llama.cpp both continue this so (FACTS)."""
    result = gemma.complete(gemma.tokenizer.encode("The capital of France is"), 12, sampling=Sampling(temperature=0))
    assert result.text.startswith(" the capital of the country of France. It is the largest")


@pytest.mark.parametrize("prompt", PROMPTS[1:3])
def test_twenty_greedy_tokens_as_transformers(gemma, gemma_reference, prompt):
    """Identical, or diverging only where transformers' top two logits are a near-tie."""
    import torch

    ids = gemma.tokenizer.encode(prompt)
    ours = gemma.complete(ids, 20, sampling=Sampling(temperature=0)).ids
    with torch.no_grad():
        theirs = gemma_reference.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False)[0, len(ids):]
    theirs = [t for t in theirs.tolist() if t not in gemma.tokenizer.eos_ids][:len(ours)]
    for n, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            top2 = np.sort(float64.logits(gemma_reference, ids + ours[:n])[-1])[-2:]
            assert top2[1] - top2[0] < 10 * GEMMA_FLOAT32_TOLERANCE, f"token {n}: {a} != {b}"
            return
    assert ours == theirs


@pytest.mark.parametrize("text", HARD_TEXTS)
def test_tokenization_equals_transformers(gemma, gemma_reference_tokenizer, text):
    assert gemma.tokenizer.encode(text) == gemma_reference_tokenizer(text, split_special_tokens=True).input_ids
    assert gemma.tokenizer.decode(gemma.tokenizer.encode(text)[1:]) == text.replace("\u2581", " ")


def test_tokenization_of_source_code_equals_transformers(gemma, gemma_reference_tokenizer):
    """A long text: llmx's own engine source (runs of up to 31 spaces; longer ones, see below)."""
    text = "".join(path.read_text() for path in sorted((conftest.REPO / "engine").glob("*.py")))
    text = text.replace(" " * 32, " " * 31 + "\n")
    assert gemma.tokenizer.encode(text) == gemma_reference_tokenizer(text, split_special_tokens=True).input_ids


def test_long_space_runs_are_whole_user_defined_tokens_longest_first(gemma):
    """Runs of 2..31 spaces are user-defined tokens, found before BPE longest first, as SentencePiece does
    (bpe_model.cc's PrefixMatch, see engine/spm.py) and llama.cpp; transformers' GGUF conversion builds them
    by BPE merges instead (16 + 24 here: test_gemma3_hf.py)."""
    tok = gemma.tokenizer
    assert [tok.text(i) for i in tok.encode(" " * 40 + "x")[1:]] == [" " * 31, " " * 9, "x"]


def test_special_tokens_only_when_asked(gemma):
    tok = gemma.tokenizer
    assert tok.encode("<start_of_turn>", special=True) == [tok.bos_id, 105]
    assert len(tok.encode("<start_of_turn>")) > 2
    assert tok.bos_id == 2 and tok.add_bos and 1 in tok.eos_ids


def test_cached_decoding_past_the_window_equals_full_recompute(gemma):
    """With an 8-position window (same weights) a 40-token text crosses it many times: prefill, a chunk,
    then one token at a time through the local layers' ring buffers, against one pass over everything."""
    small = dataclasses.replace(gemma, config=dataclasses.replace(gemma.config, sliding_window=8))
    ids = small.tokenizer.encode("One two three four five six seven eight nine ten, " * 3)[:40]
    full = small.forward(ids, all_logits=True)[0]
    logits, cache = small.forward(ids[:13], all_logits=True)
    parts = [logits]
    logits, cache = small.forward(ids[13:20], cache, all_logits=True)
    parts.append(logits)
    for token in ids[20:]:
        logits, cache = small.forward([token], cache)
        parts.append(logits[None])
    np.testing.assert_allclose(np.concatenate(parts), full, rtol=0, atol=GEMMA_FLOAT32_TOLERANCE)
    assert {cache.k[i].shape[1] for i in small.config.local_layers} == {8}  # bounded memory
    assert cache.k[5].shape[1] == small.config.n_ctx


def test_sliding_window_equals_transformers(gemma64, gemma_reference64):
    """The window's edge (a local layer sees `window` positions, its own included) as transformers has it."""
    small = dataclasses.replace(gemma64, config=dataclasses.replace(gemma64.config, sliding_window=8))
    ids = small.tokenizer.encode("One two three four five six seven eight nine ten eleven twelve")
    gemma_reference64.config.sliding_window = 8
    try:
        theirs = float64.logits(gemma_reference64, ids)
    finally:
        gemma_reference64.config.sliding_window = 512
    np.testing.assert_allclose(small.forward(ids, all_logits=True)[0], theirs, rtol=0,
                               atol=float64.float64_tolerance(GEMMA_FLOAT32_TOLERANCE))
    assert not np.allclose(theirs, float64.logits(gemma_reference64, ids))  # the window mattered


def test_local_layers_attention_pattern_ends_at_the_window(gemma):
    from llmx.engine.hooks import Trace

    small = dataclasses.replace(gemma, config=dataclasses.replace(gemma.config, sliding_window=4))
    trace = Trace(["blocks.0.attn.pattern", "blocks.5.attn.pattern"])
    small.forward(small.tokenizer.encode("a b c d e f g h i j"), hooks=trace)
    local, full = trace["blocks.0.attn.pattern"], trace["blocks.5.attn.pattern"]  # [head, dest, src]
    dest, src = np.indices(local.shape[1:])
    assert (local[:, (src > dest) | (dest - src >= 4)] == 0).all() and (full[:, src > dest] == 0).all()
    assert (full[:, dest - src >= 4] > 0).any()


# The commands on it, in-process through main() (tests/test_cli.py's `run`) on the model loaded above.

@pytest.fixture
def gemma_cli(gemma, gemma_path, monkeypatch):
    """`-m FILE` for the commands, with their model loading replaced by the session's loaded Gemma."""
    from llmx.commands import core, inspect, score

    for module in (core, inspect, score):
        monkeypatch.setattr(module, "load_model", lambda name: gemma)
    return ["-m", str(gemma_path)]


@pytest.mark.parametrize("args, shown", [
    (["tokenize", "The capital of France is  🙂"], "[<bos>][The][·capital][·of][·France][·is][··][🙂]"),
    (["predict", "The capital of France is"], "·Paris"),
    (["continue", "-t", "0", "--max-tokens", "12", "The capital of France is"],
     " the capital of the country of France. It is the largest"),
    (["score", "The capital of France is Paris."], "perplexity"),
    (["lens", "The capital of France is"], "block 17"),
    (["attention", "--layer", "5", "The capital of France is Paris."], "H3"),
    (["heads", "--seq-len", "20"], "induction"),
    (["neighbors", " France"], "·Germany"),
    (["steer", "I went to the", "--add", " wedding", "--sub", " funeral", "--layer", "6", "--max-tokens", "5"],
     "steered"),
    (["explain", "The capital of France is"], "sandwich"),
], ids=lambda value: value[0] if isinstance(value, list) else None)
def test_commands_run_on_gemma(gemma_cli, args, shown):
    from test_cli import run

    result = run(args[0], *gemma_cli, *args[1:])
    assert result.exit_code == 0, result.stderr
    assert shown in result.stdout


def test_llm_plugin_continues_like_llmx(gemma, gemma_path, monkeypatch):
    from llmx import llm_plugin

    monkeypatch.setattr(llm_plugin, "load_model", lambda source, adapter=None: gemma)
    model = llm_plugin.LlmxModel("gemma-3-270m", str(gemma_path))
    response = model.prompt("The capital of France is", temperature=0, max_tokens=12)
    assert response.text().startswith(" the capital of the country of France. It is the largest")


def test_post_norm_hooks_see_the_sublayer_output_before_its_norm(gemma):
    from llmx.engine.hooks import Trace
    from llmx.engine.model import norm

    trace = Trace(["blocks.3.ln1_post.in", "blocks.3.attn_out", "blocks.3.ln2_post.in", "blocks.3.mlp_out"])
    gemma.forward(gemma.tokenizer.encode("Hello there"), hooks=trace)
    block = gemma.weights.blocks[3]
    np.testing.assert_array_equal(norm(trace["blocks.3.ln1_post.in"], block.ln1_post, gemma.config),
                                  trace["blocks.3.attn_out"])
    np.testing.assert_array_equal(norm(trace["blocks.3.ln2_post.in"], block.ln2_post, gemma.config),
                                  trace["blocks.3.mlp_out"])
