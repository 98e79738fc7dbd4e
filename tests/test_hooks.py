"""Hooks: reading and replacing named activations, the per-head attention result, hooks during cached
decoding, passes without hooks, and generation with hooks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from llmx.engine import Hooks, Sampling, Trace
from llmx.engine.hooks import add_at_positions
from llmx.engine.model import astype
from test_inspect import tiny_llama

TEXT = "Hullo, my name is"
# every hook point but blocks.L.attn.result, which changes how attn_out is summed
EVERY_NAME_BUT_RESULT = ["blocks.*.resid_*", "blocks.*.attn.[qkvz]", "blocks.*.attn.pattern", "blocks.*.attn_out",
                         "blocks.*.mlp.*", "blocks.*.mlp_out", "*embed", "ln_final"]


@pytest.fixture(params=["gpt2", "llama"])
def lm(request, tiny_gpt2_model):
    return tiny_gpt2_model if request.param == "gpt2" else tiny_llama(tiny_gpt2_model)


@pytest.fixture
def lm64(lm):
    """The same model in float64: comparisons whose two sides add in a different order are then exact to ~1e-12."""
    return dataclasses.replace(lm, weights=astype(lm.weights, np.float64))


@pytest.fixture
def ids(lm):
    return lm.prompt_ids(TEXT)


def with_block(lm, layer: int, **parts):
    """`lm` with block `layer`'s parts replaced (e.g. w_o=Linear(zeros))."""
    blocks = list(lm.weights.blocks)
    blocks[layer] = dataclasses.replace(blocks[layer], **parts)
    return dataclasses.replace(lm, weights=dataclasses.replace(lm.weights, blocks=tuple(blocks)))


def zeros(value, site):
    return np.zeros_like(value)


def test_zeroing_attn_out_equals_zeroing_the_blocks_output_projection(lm, ids):
    w_o = lm.weights.blocks[0].w_o
    ablated = with_block(lm, 0, w_o=dataclasses.replace(w_o, w=np.zeros_like(w_o.w),
                                                        b=None if w_o.b is None else np.zeros_like(w_o.b)))
    hooked, _ = lm.forward(ids, hooks=Hooks().add("blocks.0.attn_out", zeros), all_logits=True)
    expected, _ = ablated.forward(ids, all_logits=True)
    np.testing.assert_array_equal(hooked, expected)  # the same operations on the same numbers: bit for bit
    plain, _ = lm.forward(ids, all_logits=True)
    assert not np.allclose(hooked, plain)


def test_zeroing_mlp_post_equals_zeroing_the_mlp_output_matrix(lm, ids):
    w_out = lm.weights.blocks[1].w_out
    ablated = with_block(lm, 1, w_out=dataclasses.replace(w_out, w=np.zeros_like(w_out.w)))
    hooked, _ = lm.forward(ids, hooks=Hooks().add("blocks.1.mlp.post", zeros), all_logits=True)
    np.testing.assert_array_equal(hooked, ablated.forward(ids, all_logits=True)[0])


def test_a_hook_reads_what_a_trace_records_and_none_keeps_the_value(lm, ids):
    seen = {}

    def read(value, site):
        seen[site.name] = value.copy()

    trace = Trace(["blocks.*.attn.pattern", "embed"])
    plain, _ = lm.forward(ids, all_logits=True)
    logits, _ = lm.forward(ids, hooks=Hooks().add("blocks.*.attn.pattern", read) + trace, all_logits=True)
    np.testing.assert_array_equal(logits, plain)
    assert set(seen) == {"blocks.0.attn.pattern", "blocks.1.attn.pattern"}
    np.testing.assert_array_equal(seen["blocks.1.attn.pattern"], trace["blocks.1.attn.pattern"])
    np.testing.assert_array_equal(trace["embed"], lm.weights.embed[ids])


def test_hooks_run_in_order_each_seeing_the_last_replacement(lm, ids):
    calls = []
    hooks = (Hooks().add("blocks.0.resid_mid", lambda v, s: calls.append("double") or 2 * v)
             .add("blocks.0.resid_mid", lambda v, s: calls.append("trace")))
    trace = Trace(["blocks.0.resid_mid"])
    lm.forward(ids, hooks=hooks + trace)
    plain = Trace(["blocks.0.resid_mid"])
    lm.forward(ids, hooks=plain)
    assert calls == ["double", "trace"]
    np.testing.assert_array_equal(trace["blocks.0.resid_mid"], 2 * plain["blocks.0.resid_mid"])


def test_attn_result_summed_over_heads_plus_bias_is_attn_out(lm64, ids):
    trace = Trace(["blocks.*.attn.result", "blocks.*.attn_out"])
    lm64.forward(ids, hooks=trace)
    for layer, blk in enumerate(lm64.weights.blocks):
        result = trace[f"blocks.{layer}.attn.result"]
        assert result.shape == (len(ids), lm64.config.n_head, lm64.config.n_embd)
        bias = 0 if blk.w_o.b is None else blk.w_o.b
        # float64: the two sides differ only in the order of the d_head * n_head products summed
        np.testing.assert_allclose(result.sum(axis=1) + bias, trace[f"blocks.{layer}.attn_out"], rtol=1e-12,
                                   atol=1e-12)


def test_attn_result_is_computed_only_when_hooked_and_replacing_it_changes_attn_out(lm64, ids, monkeypatch):
    import llmx.engine.model as model

    def no_einsum(*args, **kwargs):
        raise AssertionError("attn.result computed without a hook on it")

    with monkeypatch.context() as patch:
        patch.setattr(model.np, "einsum", no_einsum)  # the per-head product is the forward pass's only einsum
        lm64.forward(ids, hooks=Trace(EVERY_NAME_BUT_RESULT))
    head0 = Hooks().add("blocks.0.attn.result", lambda v, s: v * (np.arange(v.shape[1]) == 0)[None, :, None])
    keep = Trace(["blocks.0.attn.z", "blocks.0.attn_out"])
    lm64.forward(ids, hooks=head0 + keep)
    w_o = lm64.weights.blocks[0].w_o
    d = lm64.config.d_head
    only_head0 = keep["blocks.0.attn.z"][:, 0] @ w_o.w[:, :d].T + (0 if w_o.b is None else w_o.b)
    np.testing.assert_allclose(keep["blocks.0.attn_out"], only_head0, rtol=1e-12, atol=1e-12)


def test_no_hooks_empty_hooks_and_read_only_hooks_give_bit_identical_logits(lm, ids):
    plain, _ = lm.forward(ids, all_logits=True)
    for hooks in (Hooks(), Trace(EVERY_NAME_BUT_RESULT),
                  Hooks([(name, lambda value, site: None) for name in EVERY_NAME_BUT_RESULT])):
        np.testing.assert_array_equal(lm.forward(ids, hooks=hooks, all_logits=True)[0], plain)


def test_names_and_shapes_are_transformerlens(lm, ids):
    cfg, n = lm.config, len(ids)
    trace = Trace()
    lm.forward(ids, hooks=trace, all_logits=True)
    shapes = {name: value.shape for name, value in trace.acts.items()}
    assert shapes["embed"] == shapes["blocks.1.resid_post"] == shapes["ln_final"] == (n, cfg.n_embd)
    assert ("pos_embed" in shapes) == (cfg.positions == "learned")
    assert shapes["blocks.0.attn.q"] == shapes["blocks.0.attn.z"] == (n, cfg.n_head, cfg.d_head)
    assert shapes["blocks.0.attn.k"] == shapes["blocks.0.attn.v"] == (n, cfg.n_kv_head, cfg.d_head)
    assert shapes["blocks.0.attn.pattern"] == (cfg.n_head, n, n)
    assert shapes["blocks.0.mlp.pre"] == shapes["blocks.0.mlp.post"] == (n, cfg.n_ff)
    assert ("blocks.0.mlp.pre_linear" in shapes) == (cfg.mlp == "swiglu")
    per_block = {"resid_pre", "attn.q", "attn.k", "attn.v", "attn.pattern", "attn.z", "attn_out", "resid_mid",
                 "mlp.pre", "mlp.post", "mlp_out", "resid_post"}
    assert {f"blocks.1.{name}" for name in per_block} <= set(shapes)


def test_trace_records_in_the_passs_dtype(lm, lm64, ids):
    for model, dtype in ((lm, np.float32), (lm64, np.float64)):
        trace = Trace()
        model.forward(ids, hooks=trace)
        assert {value.dtype for value in trace.acts.values()} == {np.dtype(dtype)}


def test_hooks_during_cached_decoding_see_absolute_positions(lm64, ids):
    starts, rows = [], []

    def read(value, site):
        starts.append(site.start)
        rows.append(len(value))
        assert site.layer == 1 and site.name == "blocks.1.resid_pre"

    delta = np.random.default_rng(0).standard_normal((len(ids) + 1, lm64.config.n_embd))
    hooks = Hooks().add("blocks.1.resid_pre", read) + add_at_positions("blocks.0.resid_pre", delta)
    logits, cache = lm64.forward(ids[:4], hooks=hooks)
    cached = [logits]
    for token in ids[4:]:
        logits, cache = lm64.forward([token], cache, hooks=hooks)
        cached.append(logits)
    assert starts == [0] + list(range(4, len(ids))) and rows == [4] + [1] * (len(ids) - 4)
    full, _ = lm64.forward(ids, hooks=add_at_positions("blocks.0.resid_pre", delta), all_logits=True)
    np.testing.assert_allclose(np.array(cached), full[3:], rtol=1e-10, atol=1e-10)  # float64: only the order differs


def test_steering_hook_at_block_0_is_a_shifted_position_embedding(tiny_gpt2_model):
    """Adding delta to the stream entering block 0 is adding it to the learned position embeddings."""
    lm = dataclasses.replace(tiny_gpt2_model, weights=astype(tiny_gpt2_model.weights, np.float64))
    ids = lm.prompt_ids(TEXT)
    delta = np.random.default_rng(1).standard_normal((3, lm.config.n_embd))
    pos = lm.weights.pos_embed.copy()
    pos[:3] += delta
    shifted = dataclasses.replace(lm, weights=dataclasses.replace(lm.weights, pos_embed=pos))
    steered, _ = lm.forward(ids, hooks=add_at_positions("blocks.0.resid_pre", delta), all_logits=True)
    np.testing.assert_allclose(steered, shifted.forward(ids, all_logits=True)[0], rtol=1e-10, atol=1e-10)


def test_hooks_are_immutable_and_a_wrong_shape_is_the_hooks_error(lm, ids):
    empty = Hooks()
    one = empty.add("ln_final", zeros)
    assert empty.entries == () and len(one.entries) == 1 and len((one + one).entries) == 2
    with pytest.raises(ValueError, match=r"the hook on blocks.0.attn_out returned shape \(1,\), not"):
        lm.forward(ids, hooks=Hooks().add("blocks.0.attn_out", lambda v, s: np.zeros(1)))


def test_generation_takes_hooks_on_every_pass(tiny_gpt2_model):
    lm = tiny_gpt2_model
    starts = []
    hooks = Hooks().add("blocks.0.resid_pre", lambda v, s: starts.append((s.start, len(v))))
    prompt = lm.prompt_ids("Hullo")
    result = lm.complete(prompt, 5, sampling=Sampling(temperature=0), hooks=hooks)
    assert result.ids == lm.complete(prompt, 5, sampling=Sampling(temperature=0)).ids
    n = len(prompt)
    assert starts == [(0, n)] + [(n + i, 1) for i in range(len(result.ids) - 1)]
    ablated = lm.complete(prompt, 5, sampling=Sampling(temperature=0), hooks=Hooks().add("blocks.*.attn_out", zeros))
    assert ablated.ids != result.ids
