"""Long prompts in bounded memory: a pass split into chunks of positions computes what one pass does.

Chunking changes only the order of float32 sums (a chunk's rows go through the BLAS in smaller products, a
row's softmax sums over its own keys instead of the whole pass's with zeros after them), so each result is
checked against the float64 reference within float32 rounding (TINY_FLOAT32_TOLERANCE, see float64.py),
and the float64 results of the two ways agree to float64 rounding.
"""

from __future__ import annotations

import dataclasses
import tracemalloc

import numpy as np
import pytest

import conftest
import float64
from llmx.engine import load
from llmx.engine import model as model_module
from llmx.engine import attention as attention_module
from llmx.engine import lanes as lanes_module
from llmx.engine.hooks import Hooks, Trace
from llmx.engine.model import chunk_size, forward
from llmx.engine.threads import blas_limit

IDS = [int(i) for i in np.random.default_rng(3).integers(0, 50257, 60)]


@pytest.fixture(scope="module")
def tiny_llama_model(tmp_path_factory, gpt2_vocab):
    return load(str(conftest.write_tiny_llama(tmp_path_factory.mktemp("llama-longctx"), gpt2_vocab, tied=True)))


@pytest.fixture(scope="module", params=["gpt2", "llama", "llama-local"])
def tiny(request, tiny_gpt2_model, tiny_llama_model):
    """Tiny models: GPT-2, Llama, and Llama with Gemma 3's local layers (conftest.tiny_variant)."""
    return conftest.tiny_variant(request.param, tiny_gpt2_model, tiny_llama_model)


def run(model, ids, **options):
    return forward(ids, model.weights, model.config, **options)


@pytest.mark.parametrize("chunk", [1, 7, 16])
def test_chunked_logits_equal_one_pass_within_float32_rounding(tiny, chunk):
    exact, _ = run(float64.llmx_float64(tiny), IDS, all_logits=True)
    exact_chunked, _ = run(float64.llmx_float64(tiny), IDS, all_logits=True, chunk=chunk)
    np.testing.assert_allclose(exact_chunked, exact, rtol=0, atol=1e-12)  # the same math
    whole, _ = run(tiny, IDS, all_logits=True)
    chunked, _ = run(tiny, IDS, all_logits=True, chunk=chunk)
    assert chunked.shape == whole.shape == (len(IDS), tiny.config.n_vocab)
    np.testing.assert_allclose(chunked, exact, rtol=0, atol=float64.TINY_FLOAT32_TOLERANCE)
    np.testing.assert_allclose(whole, exact, rtol=0, atol=float64.TINY_FLOAT32_TOLERANCE)


@pytest.mark.parametrize("block", [5, 16])
def test_attention_in_blocks_equals_one_pass(tiny, block, monkeypatch):
    """Queries attend in blocks (each to the keys up to its own end; on a local layer from the start of its
    first query's window): the float64 logits are the unsplit attention's, whole and after a cached prefix,
    and the pattern a hook sees (which turns blocks off) is the same pass's."""
    exact = float64.llmx_float64(tiny)
    monkeypatch.setattr(attention_module, "BLOCK", 10_000)
    whole, _ = run(exact, IDS, all_logits=True)
    _, prefix = run(exact, IDS[:9])
    after, _ = run(exact, IDS[9:], cache=prefix, all_logits=True)
    monkeypatch.setattr(attention_module, "BLOCK", block)
    monkeypatch.setattr(attention_module, "MIN_BLOCK", block)
    blocked, _ = run(exact, IDS, all_logits=True)
    _, prefix = run(exact, IDS[:9])
    blocked_after, _ = run(exact, IDS[9:], cache=prefix, all_logits=True)
    np.testing.assert_allclose(blocked, whole, rtol=0, atol=1e-12)
    np.testing.assert_allclose(blocked_after, after, rtol=0, atol=1e-12)
    assert np.abs(whole[9:] - after).max() < 1e-9 and np.abs(whole).max() > 1e-3
    trace = Trace(["blocks.0.attn.pattern"])
    hooked, _ = run(exact, IDS, all_logits=True, hooks=trace)
    np.testing.assert_allclose(hooked, whole, rtol=0, atol=1e-12)
    assert trace["blocks.0.attn.pattern"].shape == (tiny.config.n_head, len(IDS), len(IDS))


def test_chunked_cache_continues_like_one_pass(tiny):
    """The cache a chunked pass leaves behind decodes what a one-pass cache decodes."""
    last, cache = run(tiny, IDS[:40], chunk=9)
    assert cache.length == 40
    steps = [last]
    for token in IDS[40:]:
        logits, cache = run(tiny, [token], cache=cache)
        steps.append(logits)
    whole, _ = run(float64.llmx_float64(tiny), IDS, all_logits=True)
    np.testing.assert_allclose(np.array(steps), whole[39:], rtol=0, atol=float64.TINY_FLOAT32_TOLERANCE)


def greedy(model, ids, n, **options):
    logits, cache = run(model, ids, **options)
    out = []
    for _ in range(n):
        out.append(int(np.argmax(logits)))
        logits, cache = run(model, [out[-1]], cache=cache)
    return out


def test_greedy_continuation_is_the_same_after_a_chunked_prefill(tiny):
    assert greedy(tiny, IDS[:40], 20, chunk=6) == greedy(tiny, IDS[:40], 20)


def test_hooked_passes_are_not_split(tiny):
    """Hooks see the whole sequence at once (patterns [head, n, n]), whatever the chunk size."""
    trace = Trace(["blocks.1.attn.pattern", "ln_final"])
    calls = []
    run(tiny, IDS[:30], hooks=trace, chunk=4, all_logits=True, on_progress=lambda *a: calls.append(a))
    assert trace["blocks.1.attn.pattern"].shape == (tiny.config.n_head, 30, 30)
    assert trace["ln_final"].shape == (30, tiny.config.n_embd)
    assert calls == []


def expected_progress(total: int, passes: list[int], n_layer: int) -> list[tuple[int, int]]:
    """What on_progress hears: (0, total) first, then as each pass's each layer ends, that layer's share."""
    calls, done = [(0, total)], 0
    for size in passes:
        calls += [(done + size * (layer + 1) // n_layer, total) for layer in range(n_layer)]
        done += size
    return calls


def test_progress_hears_each_layer_of_each_pass(tiny_gpt2_model, monkeypatch):
    """A bar moves within a pass, not only between passes, whether the pass is split or not and whether it runs in
    lanes (here: any pass of 8 positions or more, 2 BLAS threads) or not; a hooked pass tells nothing."""
    n_layer, calls = tiny_gpt2_model.config.n_layer, []
    run(tiny_gpt2_model, IDS[:20], chunk=8, on_progress=lambda *a: calls.append(a))
    assert calls == expected_progress(20, [7, 7, 6], n_layer)  # 20 positions under 8: three equal passes
    calls.clear()
    run(tiny_gpt2_model, IDS[:20], on_progress=lambda *a: calls.append(a))
    assert calls == expected_progress(20, [20], n_layer)
    monkeypatch.setattr(lanes_module, "MIN_ROWS", 8)
    laned, real_blocks = [], lanes_module.blocks
    monkeypatch.setattr(lanes_module, "blocks", lambda *args: laned.append(len(args[0])) or real_blocks(*args))
    for threads in (2, 1):
        calls.clear()
        with blas_limit(threads):
            run(tiny_gpt2_model, IDS[:20], chunk=10, on_progress=lambda *a: calls.append(a))
        assert calls == expected_progress(20, [10, 10], n_layer)
    assert laned == [10, 10]  # the first run's passes, in lanes
    calls.clear()
    run(tiny_gpt2_model, IDS[:20], hooks=Trace(["ln_final"]), on_progress=lambda *a: calls.append(a))
    assert calls == []


def test_passes_split_a_prompt_equally_and_hand_every_logit_in_pieces(tiny_gpt2_model, monkeypatch):
    """chunk_size: equal passes under the cap, never one of a few positions after full ones; the cap is CHUNK for
    passes in lanes, PLAIN_CHUNK for the others. Every position's logits (score) come LOGITS_CHUNK rows at a time,
    whatever the passes."""
    assert [chunk_size(n, 2048) for n in (1, 2048, 2049, 2100, 4096, 8000)] == [1, 2048, 1025, 1050, 2048, 2000]
    assert chunk_size(20, 8) == 7 and chunk_size(5, 8) == 5
    monkeypatch.setattr(model_module, "CHUNK", 16)
    monkeypatch.setattr(model_module, "PLAIN_CHUNK", 8)
    monkeypatch.setattr(model_module, "LOGITS_CHUNK", 6)
    monkeypatch.setattr(lanes_module, "MIN_ROWS", 8)
    passes = []
    monkeypatch.setattr(model_module, "one_pass", lambda ids, *a: passes.append(len(ids)) or real_one_pass(ids, *a))
    with blas_limit(2):  # passes that run in lanes take up to CHUNK positions
        pieces = list(model_module.forward_chunks(IDS[:20], tiny_gpt2_model.weights, tiny_gpt2_model.config))
        assert passes == [10, 10] and [len(logits) for logits, _ in pieces] == [6, 4, 6, 4]
        assert [cache.length for _, cache in pieces] == [10, 10, 20, 20]
        passes.clear()
        run(tiny_gpt2_model, IDS[:20])
        assert passes == [10, 10]
    exact, _ = run(float64.llmx_float64(tiny_gpt2_model), IDS[:20], all_logits=True)
    np.testing.assert_allclose(np.concatenate([logits for logits, _ in pieces]), exact, rtol=0,
                               atol=float64.TINY_FLOAT32_TOLERANCE)
    passes.clear()
    with blas_limit(1):  # without lanes, up to PLAIN_CHUNK
        run(tiny_gpt2_model, IDS[:20])
    assert passes == [7, 7, 6]


real_one_pass = model_module.one_pass


def test_attention_blocks_shrink_as_keys_grow_within_the_scores_budget(tiny_llama_model):
    cfg = dataclasses.replace(tiny_llama_model.config, n_head=9, n_ctx=8192)
    keys = (512, 1000, 4000, 8000, 100_000)
    sizes = [attention_module.block_size(cfg, n) for n in keys]
    assert sizes[0] == attention_module.BLOCK and sizes == sorted(sizes, reverse=True)
    assert sizes[-1] == attention_module.MIN_BLOCK
    for n, size in zip(keys[:-1], sizes):
        assert cfg.n_head * size * n <= attention_module.SCORES_BUDGET


def small_pieces(monkeypatch, positions: int, rows: int) -> None:
    """Passes of at most `positions` (in lanes or not), logits in pieces of at most `rows`."""
    for name, value in (("CHUNK", positions), ("PLAIN_CHUNK", positions), ("LOGITS_CHUNK", rows)):
        monkeypatch.setattr(model_module, name, value)


def test_score_of_a_chunked_window_equals_the_float64_reference(tiny_gpt2_model, monkeypatch):
    """score keeps one piece of logits at a time (passes of 8 positions, pieces of 5 rows here); its log-probs
    are those of the float64 logits."""
    small_pieces(monkeypatch, 8, 5)
    scored = tiny_gpt2_model.score(IDS[:50])
    exact, _ = run(float64.llmx_float64(tiny_gpt2_model), IDS[:50], all_logits=True)
    shifted = exact - exact.max(axis=1, keepdims=True)
    logprobs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected = logprobs[np.arange(49), IDS[1:50]]
    assert [t.logprob for t in scored.tokens][0] is None
    np.testing.assert_allclose([t.logprob for t in scored.tokens[1:]], expected, rtol=0, atol=2e-5)


def test_score_in_sliding_windows_still_covers_every_token(tiny_gpt2_model, monkeypatch):
    small_pieces(monkeypatch, 8, 5)
    ids = IDS * 2  # 120 tokens, context 64
    chunked = tiny_gpt2_model.score(ids, stride=20)
    small_pieces(monkeypatch, 512, 512)
    whole = tiny_gpt2_model.score(ids, stride=20)
    assert chunked.windows == whole.windows == 4
    np.testing.assert_allclose([t.logprob or 0 for t in chunked.tokens], [t.logprob or 0 for t in whole.tokens],
                               rtol=0, atol=2e-5)


def peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_long_pass_holds_one_blocks_scores_not_the_whole_prompts(tiny_gpt2_model):
    """A 1,024-position pass through a GPT-2 widened to that context: its [n_head, n, n] scores (16 MB) exist
    whole only for a hook on the pattern (a pass with hooks is never split); a plain pass, whole or in chunks,
    attends in blocks of BLOCK queries, each to the keys up to its own end, and holds one block's scores."""
    cfg = dataclasses.replace(tiny_gpt2_model.config, n_ctx=1024)
    weights = dataclasses.replace(tiny_gpt2_model.weights,
                                  pos_embed=np.resize(tiny_gpt2_model.weights.pos_embed, (1024, cfg.n_embd)))
    ids = np.resize(IDS, 1024)
    seen = Hooks().add("blocks.0.attn.pattern", lambda value, site: None)
    hooked = peak_bytes(lambda: forward(ids, weights, cfg, hooks=seen))
    whole = peak_bytes(lambda: forward(ids, weights, cfg, chunk=1024))
    chunked = peak_bytes(lambda: forward(ids, weights, cfg, chunk=64))
    scores = cfg.n_head * 1024 * 1024 * 4
    assert hooked > scores
    assert whole < hooked - 0.75 * scores and chunked < hooked - 0.75 * scores


def test_the_prefill_bar_shows_only_on_a_terminal_and_after_its_delay(monkeypatch):
    from llmx import notices

    with notices.prefill_progress() as on_progress:  # pytest's stderr is not a terminal
        assert on_progress is None
    late = notices.LateBar("reading the prompt", after=3600)
    late.update(0, 100)
    late.update(50, 100)
    assert late.bar is None  # quicker than `after`: nothing shown
    now = notices.LateBar("reading the prompt", after=0)
    now.update(0, 100)
    now.update(50, 100)
    assert now.bar is not None
    now.update(100, 100)
    assert now.bar is None  # gone when the pass is done
