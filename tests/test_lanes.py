"""A long pass in lanes (engine/lanes.py): each block's steps shared between threads, each with a one-thread BLAS.

The lanes compute every number with the plain pass's functions, on slices of rows, heads or columns: the same
math. (On SmolLM2 and GPT-2 small the residual stream came out bit-identical to the plain pass's with a one-thread
BLAS; but OpenBLAS may take other kernels for slices of small matrices, such as these tiny models', so the tests
compare in float64, and float32 against float64, as test_longctx.py does.)
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest

import conftest
import float64
from llmx.engine import lanes
from llmx.engine import attention as attention_module
from llmx.engine.attention import rotary_tables
from llmx.engine.hooks import NO_POINTS, Trace
from llmx.engine.model import KVCache, block, embed, forward, mlp
from llmx.engine.threads import blas_limit

IDS = [int(i) for i in np.random.default_rng(5).integers(0, 50257, 60)]


@pytest.fixture(scope="module", params=["gpt2", "llama", "llama-local"])
def tiny(request, tiny_gpt2_model, tiny_llama_model):
    """GPT-2 (LayerNorm, biases, GELU, learned positions), Llama (RMSNorm, SwiGLU, rotary, 4 query heads sharing 2
    key/value heads), and Llama with a sliding-window layer whose ring buffer wraps (conftest.tiny_variant)."""
    return conftest.tiny_variant(request.param, tiny_gpt2_model, tiny_llama_model)


def blocks_plain(model, ids, cache, start):
    """The residual stream after model.block for each layer, as one_pass runs them without lanes."""
    cfg, weights = model.config, model.weights
    x = embed(np.asarray(ids), weights, cfg, start, NO_POINTS)
    ropes = rotary_tables(cfg, start, start + len(ids), weights.embed.dtype)
    for i, blk in enumerate(weights.blocks):
        local = i in cfg.local_layers
        x = block(x, blk, cfg, cache.k[i], cache.v[i], start, ropes[local], NO_POINTS,
                  cfg.sliding_window if local else None)
    return x


def blocks_in_lanes(model, ids, cache, start, n):
    cfg, weights = model.config, model.weights
    x = embed(np.asarray(ids), weights, cfg, start, NO_POINTS)
    return lanes.blocks(x, weights, cfg, cache, start, rotary_tables(cfg, start, start + len(ids), x.dtype), n)


def prefix_cache(model, n):
    """A cache holding IDS[:n] (empty for n = 0), computed by the plain pass."""
    cache = KVCache.empty(model.config)
    return forward(IDS[:n], model.weights, model.config, cache)[1] if n else cache


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("prefix", [0, 9])
def test_lanes_compute_the_plain_blocks(tiny, n, prefix, monkeypatch):
    """2 and 3 lanes (uneven shares: 4 heads, 2 key heads, 64 columns), attention in blocks of 16 queries dealt
    between them, with and without a cached prefix: the plain pass's residual stream and keys and values, to
    float64 rounding in float64 and to float32 rounding in float32."""
    monkeypatch.setattr(attention_module, "BLOCK", 16)
    monkeypatch.setattr(attention_module, "MIN_BLOCK", 16)
    ids, exact = IDS[prefix:], float64.llmx_float64(tiny)
    plain_cache, exact_cache = prefix_cache(exact, prefix), prefix_cache(exact, prefix)
    plain = blocks_plain(exact, ids, plain_cache, prefix)
    laned = blocks_in_lanes(exact, ids, exact_cache, prefix, n)
    assert laned.shape == plain.shape == (len(ids), tiny.config.n_embd) and laned.dtype == np.float64
    np.testing.assert_allclose(laned, plain, rtol=0, atol=1e-12)
    assert np.abs(plain).max() > 0.01
    lane_cache = prefix_cache(tiny, prefix)
    np.testing.assert_allclose(blocks_in_lanes(tiny, ids, lane_cache, prefix, n), plain, rtol=0,
                               atol=float64.TINY_FLOAT32_TOLERANCE)
    end = len(IDS)
    for mine, exactly, theirs in zip(lane_cache.k + lane_cache.v, exact_cache.k + exact_cache.v,
                                     plain_cache.k + plain_cache.v):
        np.testing.assert_allclose(exactly[:, :end], theirs[:, :end], rtol=0, atol=1e-12)
        np.testing.assert_allclose(mine[:, :end], theirs[:, :end], rtol=0, atol=float64.TINY_FLOAT32_TOLERANCE)


@pytest.mark.parametrize("n_kv_head,runs", [(2, 2), (3, 3)])
def test_the_attention_queue_holds_every_pair_once_largest_first(tiny_llama_model, n_kv_head, runs):
    """A layer's queue: every (key heads, block of queries) pair once, in order of queries times the keys they see.
    Key heads that split evenly between the lanes go as each lane's run of them; otherwise one at a time."""
    cfg = dataclasses.replace(tiny_llama_model.config, n_head=2 * n_kv_head, n_kv_head=n_kv_head)
    n_seq, n_keys = 600, 700  # blocks of attention.BLOCK queries, the last one shorter, after 100 cached keys
    queue = lanes.queue(cfg, n_seq, n_keys, 2)
    size = attention_module.block_size(cfg, n_keys)
    blocks = [(lo, min(lo + size, n_seq)) for lo in range(0, n_seq, size)]
    assert len(blocks) > 2 and blocks[-1][1] - blocks[-1][0] < size
    assert sorted((heads.start, heads.stop, block.start, block.stop) for heads, block in queue) == sorted(
        (heads.start, heads.stop, lo, hi) for heads in lanes.shares(n_kv_head, runs) for lo, hi in blocks)
    work = [(block.stop - block.start) * (block.stop + n_keys - n_seq) for _, block in queue]
    assert work == sorted(work, reverse=True)


def test_a_lane_late_to_attention_leaves_the_pairs_to_the_others(tiny, monkeypatch):
    """The lanes take attention's pairs as they come free: with the second lane held back until the first has
    attended, the first takes every pair of every layer, and the residual stream is still the plain pass's."""
    monkeypatch.setattr(attention_module, "BLOCK", 16)
    monkeypatch.setattr(attention_module, "MIN_BLOCK", 16)
    first, attended, taken = threading.get_ident(), threading.Semaphore(0), {True: 0, False: 0}
    real_attend, real_values = lanes.attend_pairs, lanes.block_values

    def attend(*args):
        if threading.get_ident() != first:
            assert attended.acquire(timeout=60), "the first lane never finished attending"
        real_attend(*args)
        if threading.get_ident() == first:
            attended.release()

    def values(*args):
        taken[threading.get_ident() == first] += 1
        return real_values(*args)

    monkeypatch.setattr(lanes, "attend_pairs", attend)
    monkeypatch.setattr(lanes, "block_values", values)
    laned = blocks_in_lanes(tiny, IDS, prefix_cache(tiny, 0), 0, 2)
    cfg = tiny.config
    per_layer = [len(lanes.queue(cfg, len(IDS), len(IDS), 2)) for _ in range(cfg.n_layer)]
    assert taken == {True: sum(per_layer), False: 0}
    plain = blocks_plain(tiny, IDS, prefix_cache(tiny, 0), 0)
    np.testing.assert_allclose(laned, plain, rtol=0, atol=float64.TINY_FLOAT32_TOLERANCE)


def test_an_mlp_of_several_positions_is_each_positions_mlp(tiny):
    """model.mlp keeps several positions' hidden layer by feature (as lanes share it), one position's by position:
    the same numbers row by row, in float64 to rounding, and a result laid out by position."""
    exact = float64.llmx_float64(tiny)
    blk, cfg = exact.weights.blocks[0], exact.config
    x = np.random.default_rng(3).normal(size=(6, cfg.n_embd))
    together = mlp(x, blk, cfg, NO_POINTS)
    assert together.flags.c_contiguous and together.shape == x.shape
    alone = np.concatenate([mlp(x[i:i + 1], blk, cfg, NO_POINTS) for i in range(len(x))])
    np.testing.assert_allclose(together, alone, rtol=1e-10, atol=1e-12)
    assert np.abs(alone).max() > 1e-3


def test_lanes_count_follows_the_blas_and_the_pass(tiny, monkeypatch):
    """Two lanes for long passes without hooks where the BLAS has two threads; the plain pass otherwise."""
    cfg, long = tiny.config, lanes.MIN_ROWS
    with blas_limit(2):
        assert lanes.count(cfg, long, None) == 2 == lanes.LANES
        assert lanes.count(cfg, long - 1, None) == 1
        assert lanes.count(cfg, long, Trace(["blocks.0.resid_post"])) == 1
    for threads in (1, 3):
        with blas_limit(threads):
            assert lanes.count(cfg, long, None) == 1


def test_forward_in_lanes_matches_the_float64_reference_and_decodes_on(tiny, monkeypatch):
    """forward runs a long pass in lanes (here: any pass of 8 or more positions, 2 BLAS threads): its logits are
    the float64 reference's within float32 rounding, and the cache it leaves decodes greedily as the plain
    pass's does."""
    monkeypatch.setattr(lanes, "MIN_ROWS", 8)
    passes = []
    real_blocks = lanes.blocks
    monkeypatch.setattr(lanes, "blocks", lambda *args: passes.append(len(args[0])) or real_blocks(*args))
    exact, _ = forward(IDS, float64.llmx_float64(tiny).weights, tiny.config, all_logits=True)

    def greedy(n_new):
        logits, cache = forward(IDS[:40], tiny.weights, tiny.config)
        out = []
        for _ in range(n_new):
            out.append(int(np.argmax(logits)))
            logits, cache = forward(out[-1:], tiny.weights, tiny.config, cache)
        return out

    with blas_limit(2):
        logits, cache = forward(IDS, tiny.weights, tiny.config, all_logits=True)
        laned = greedy(12)
    assert passes[0] == len(IDS) and cache.length == len(IDS)
    np.testing.assert_allclose(logits, exact, rtol=0, atol=float64.TINY_FLOAT32_TOLERANCE)
    monkeypatch.setattr(lanes, "MIN_ROWS", 10**9)
    passes.clear()
    with blas_limit(2):
        assert greedy(12) == laned and not passes


@pytest.mark.parametrize("where", ["main", "thread"])
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_error_in_any_lane_stops_them_all_and_reaches_the_caller(tiny_gpt2_model, monkeypatch, where, error):
    """An error (or Ctrl-C) in the calling thread's lane or in another lane is raised by forward, and no lane is
    left waiting for the others."""
    monkeypatch.setattr(lanes, "MIN_ROWS", 8)
    real = lanes.hidden_columns

    def failing(*args):
        if (threading.current_thread() is threading.main_thread()) == (where == "main"):
            raise error("lane stopped")
        return real(*args)

    monkeypatch.setattr(lanes, "hidden_columns", failing)
    before = threading.active_count()
    with blas_limit(2), pytest.raises(error, match="lane stopped"):
        forward(IDS, tiny_gpt2_model.weights, tiny_gpt2_model.config)
    assert threading.active_count() == before


def test_lanes_compute_gemma3s_pass(monkeypatch):
    """Gemma 3 270M (post-norms, normalized queries and keys, one key/value head, sliding-window layers, here with a
    window of 8 so that their ring buffers wrap): forward in lanes gives the plain pass's logits within float32
    rounding (each is within GEMMA_FLOAT32_TOLERANCE of the float64 reference, test_gemma3.py), and the same
    greedy continuation."""
    from llmx.engine import load
    from test_gemma3 import GEMMA3, GEMMA_FLOAT32_TOLERANCE

    gemma = load(str(conftest.test_data(GEMMA3)))
    gemma = dataclasses.replace(gemma, config=dataclasses.replace(gemma.config, sliding_window=8))
    assert gemma.config.post_norms and gemma.config.qk_norm and gemma.config.n_kv_head == 1
    monkeypatch.setattr(attention_module, "BLOCK", 16)
    monkeypatch.setattr(attention_module, "MIN_BLOCK", 16)

    def run():
        logits, cache = forward(IDS, gemma.weights, gemma.config, all_logits=True)
        token, steps = int(np.argmax(logits[-1])), []
        for _ in range(6):
            steps.append(token)
            step, cache = forward([token], gemma.weights, gemma.config, cache)
            token = int(np.argmax(step))
        return logits, steps

    with blas_limit(2):
        monkeypatch.setattr(lanes, "MIN_ROWS", 8)
        laned, laned_steps = run()
        monkeypatch.setattr(lanes, "MIN_ROWS", 10**9)
        plain, plain_steps = run()
    np.testing.assert_allclose(laned, plain, rtol=0, atol=2 * GEMMA_FLOAT32_TOLERANCE)
    assert laned_steps == plain_steps and np.abs(plain).max() > 1
