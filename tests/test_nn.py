"""Layer 1: the primitives against closed forms."""

import numpy as np

from llmx.engine.nn import (apply_rope, by_feature, gelu_new, layer_norm, linear, log_softmax, rms_norm, rope_tables,
                            silu, softmax)
from llmx.engine.model import Linear

rng = np.random.default_rng(0)


def test_softmax_sums_to_one_and_survives_huge_logits():
    x = rng.normal(size=(3, 50)).astype(np.float32) * 1000
    p = softmax(x)
    np.testing.assert_allclose(p.sum(-1), 1, rtol=1e-6)
    assert np.all(np.isfinite(p))


def test_log_softmax_is_log_of_softmax():
    x = rng.normal(size=(4, 20))
    np.testing.assert_allclose(log_softmax(x), np.log(softmax(x)), atol=1e-12)


def test_layer_norm_gives_mean_zero_variance_one():
    x = rng.normal(3, 5, size=(6, 64)).astype(np.float32)
    y = layer_norm(x, np.ones(64, np.float32), np.zeros(64, np.float32), 1e-5)
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(-1), 1, atol=1e-3)


def test_rms_norm_gives_unit_root_mean_square():
    x = rng.normal(3, 5, size=(6, 64)).astype(np.float32)
    y = rms_norm(x, np.ones(64, np.float32), 1e-6)
    np.testing.assert_allclose(np.sqrt((y * y).mean(-1)), 1, atol=1e-5)


def test_gelu_and_silu_at_known_points():
    np.testing.assert_allclose(gelu_new(np.array([0.0, 100.0, -100.0])), [0, 100, 0], atol=1e-6)
    np.testing.assert_allclose(silu(np.array([0.0, 1.0])), [0, 1 / (1 + np.exp(-1))])


def test_rope_rotation_keeps_norms_and_depends_only_on_relative_position():
    q, k = rng.normal(size=(1, 1, 8)).astype(np.float32), rng.normal(size=(1, 1, 8)).astype(np.float32)

    def rotated_dot(pos_q, pos_k):
        cq, sq = rope_tables(np.array([pos_q]), 8, 10000.0)
        ck, sk = rope_tables(np.array([pos_k]), 8, 10000.0)
        return float((apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum())

    cos, sin = rope_tables(np.array([5]), 8, 10000.0)
    np.testing.assert_allclose(np.linalg.norm(apply_rope(q, cos, sin)), np.linalg.norm(q), rtol=1e-5)
    np.testing.assert_allclose(rotated_dot(7, 3), rotated_dot(14, 10), rtol=1e-4)
    assert abs(rotated_dot(7, 3) - rotated_dot(7, 6)) > 1e-3


def test_rope_is_rotate_half_to_the_bit_and_lays_out_heads_by_position():
    """apply_rope on a view of a projection's head columns, as attention calls it: Hugging Face's
    x * cos + rotate_half(x) * sin to the bit, as a C-contiguous [heads, n_seq, d_head] array."""
    n_seq, heads, d = 5, 3, 8
    fused = rng.normal(size=(n_seq, 2 * heads * d)).astype(np.float32)
    x = fused[:, heads * d:].reshape(n_seq, heads, d).transpose(1, 0, 2)  # [heads, n_seq, d], strided
    cos, sin = rope_tables(np.arange(10, 10 + n_seq), d, 10000.0)
    rotate_half = np.concatenate([-x[..., d // 2:], x[..., :d // 2]], axis=-1)
    got = apply_rope(x, cos, sin)
    assert got.shape == (heads, n_seq, d) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, x * cos + rotate_half * sin)


def test_by_feature_is_linear_transposed():
    """by_feature(x, p) is linear(x, p).T, bias included: float64, to rounding."""
    w, b, x = rng.normal(size=(7, 5)), rng.normal(size=7), rng.normal(size=(3, 5))
    for bias in (None, b):
        got = by_feature(x, Linear(w, bias))
        assert got.shape == (7, 3)
        np.testing.assert_allclose(got, (x @ w.T + (0 if bias is None else bias)).T, rtol=1e-12)
        np.testing.assert_allclose(got, linear(x, Linear(w, bias)).T, rtol=1e-12)


def test_activations_and_by_feature_write_into_out_to_the_bit():
    """out= (lanes write the MLP's hidden layer so, in place): the same numbers as without it, in the array given."""
    x = rng.normal(0, 4, size=(6, 9)).astype(np.float32)
    for activation in (silu, gelu_new):
        expected, work = activation(x), x.copy()
        assert activation(work, out=work) is work
        np.testing.assert_array_equal(work, expected)
    w, b, inputs = rng.normal(size=(7, 5)), rng.normal(size=7), rng.normal(size=(3, 5))
    out = np.empty((9, 3))[1:8]  # rows of a larger array, as lanes' share of the hidden layer
    assert by_feature(inputs, Linear(w, b), out=out) is out
    np.testing.assert_array_equal(out, by_feature(inputs, Linear(w, b)))
