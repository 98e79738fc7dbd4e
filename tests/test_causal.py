"""Layer 1: attention scores to softmax weights (engine/causal.py) against a float64 softmax written out here.

A pass of several positions skips subtracting each row's max when the rows' maxima allow it (causal.SHIFTLESS);
these tests cover both sides of that choice, the mask with and without a sliding window, and one new position.
"""

import numpy as np
import pytest

from llmx.engine.causal import SHIFTLESS, exponentiated

rng = np.random.default_rng(0)
N_KV, GROUP = 2, 2  # key heads, query heads per key head


def visible(start: int, n_seq: int, first: int, window: int | None) -> np.ndarray:
    """[n_seq, n_keys]: may query position start + i see key position first + j?"""
    query = np.arange(start, start + n_seq)[:, None]
    key = np.arange(first, start + n_seq)[None, :]
    return (key <= query) & ((query - key < window) if window is not None else True)


def reference(scores: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Softmax weights in float64 of scores in powers of 2, [N_KV, GROUP, n_seq, n_keys], hidden keys at 0."""
    s = np.where(seen, scores.astype(np.float64), -np.inf)
    w = np.exp2(s - s.max(axis=-1, keepdims=True))
    return w / w.sum(axis=-1, keepdims=True)


def weights(scores: np.ndarray, start: int, first: int, window: int | None) -> tuple[np.ndarray, np.ndarray]:
    """causal.exponentiated on a copy of scores [N_KV, GROUP, n_seq, n_keys]: (normalized weights, sums)."""
    n_seq, n_keys = scores.shape[-2:]
    flat = scores.reshape(N_KV, GROUP * n_seq, n_keys).copy()
    sums = exponentiated(flat, flat.reshape(scores.shape), start, first, window)
    return (flat / sums).reshape(scores.shape), sums.reshape(N_KV, GROUP, n_seq)


# (start, first, window): keys from the cache and new ones; a sliding window whose first key is not position 0
MASKS = [(3, 0, None), (6, 3, 4)]
# Row maxima inside SHIFTLESS (no subtraction), above it (2**x would overflow float32) and below it (2**x would
# underflow to 0 in every row, and the sums with it).
LEVELS = [0.0, 200.0, -200.0]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("start,first,window", MASKS)
def test_weights_equal_the_float64_softmax_at_every_level_of_scores(level, start, first, window):
    n_seq = 5
    seen = visible(start, n_seq, first, window)
    scores = (level + 3 * rng.standard_normal((N_KV, GROUP, n_seq, seen.shape[1]))).astype(np.float32)
    got, _ = weights(scores, start, first, window)
    assert np.all(np.isfinite(got))
    assert np.all(got[..., ~seen] == 0)
    # each weight: 2**x of a float32 score (a few ulp, plus the subtraction's rounding of scores within ~20 of the
    # max), over a sum of at most n_keys float32 terms (n_keys ulp): 2**-24 * (n_keys + 16) relative
    np.testing.assert_allclose(got, reference(scores, seen), rtol=2.0 ** -24 * (seen.shape[1] + 16), atol=1e-30)


def test_scores_whose_maxima_allow_it_are_exponentiated_without_subtracting():
    start, first, window, n_seq = 3, 0, None, 5
    seen = visible(start, n_seq, first, window)
    scores = (SHIFTLESS[1] - 8 + rng.standard_normal((N_KV, GROUP, n_seq, seen.shape[1]))).astype(np.float32)
    _, sums = weights(scores, start, first, window)
    unshifted = np.where(seen, np.exp2(scores.astype(np.float64)), 0).sum(axis=-1)
    np.testing.assert_allclose(sums, unshifted, rtol=2.0 ** -24 * (seen.shape[1] + 16))


@pytest.mark.parametrize("level", LEVELS)
def test_one_new_position_sees_every_key(level):
    scores = (level + 3 * rng.standard_normal((N_KV, GROUP, 1, 9))).astype(np.float32)
    got, _ = weights(scores, 8, 0, None)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, reference(scores, np.ones((1, 9), bool)), rtol=2.0 ** -24 * 25, atol=1e-30)


def test_a_rows_weights_depend_on_that_row_alone():
    """engine/lanes.py attends by key head where the plain pass takes all of them at once: a row whose max is out of
    SHIFTLESS (so that its max is subtracted) must not change the weights of rows beside it, to the bit."""
    start, first, window, n_seq = 3, 0, None, 5
    seen = visible(start, n_seq, first, window)
    scores = rng.standard_normal((N_KV, GROUP, n_seq, seen.shape[1])).astype(np.float32)
    scores[1, 0, 2] += 200  # one row of the second key head
    together, _ = weights(scores, start, first, window)
    for head in range(N_KV):
        alone = scores[head:head + 1].reshape(1, GROUP * n_seq, -1).copy()
        sums = exponentiated(alone, alone.reshape(1, GROUP, n_seq, -1), start, first, window)
        np.testing.assert_array_equal(together[head], (alone / sums).reshape(GROUP, n_seq, -1))
