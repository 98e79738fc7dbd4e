"""Layer 1: attention's queries and keys to softmax weights (engine/causal.py) against a float64 softmax written out
here.

A pass of several positions exponentiates its scores without subtracting each row's max and computes again, as the
textbook does, the rows whose sums or weighted values that leaves out of range (causal.weighted); against
causal.KEYS_FIRST keys or more it computes the scores as keys times queries. These tests cover both sides of each
choice, the mask with and without a sliding window, and one new position. Queries and keys are multiples of 1/8 with
a few terms, so that every score is exact in float32 whichever order a product sums in: what differs from the
float64 reference is 2**x and the sums.
"""

import numpy as np
import pytest

from llmx.engine import causal
from llmx.engine.causal import weighted

rng = np.random.default_rng(0)
N_KV, GROUP, D_HEAD = 2, 2, 8  # key heads, query heads per key head, numbers per head


def visible(start: int, n_seq: int, first: int, window: int | None) -> np.ndarray:
    """[n_seq, n_keys]: may query position start + i see key position first + j?"""
    query = np.arange(start, start + n_seq)[:, None]
    key = np.arange(first, start + n_seq)[None, :]
    return (key <= query) & ((query - key < window) if window is not None else True)


def heads(n_seq: int, n_keys: int, level: float):
    """Queries [N_KV, GROUP * n_seq, D_HEAD] and keys and values [N_KV, n_keys, D_HEAD] whose scores are `level`
    plus a few eighths: the first number of every key is 1, of every query `level`."""
    q = rng.integers(-4, 5, (N_KV, GROUP * n_seq, D_HEAD)) / 8
    keys = rng.integers(-4, 5, (N_KV, n_keys, D_HEAD)) / 8
    q[..., 0], keys[..., 0] = level, 1
    values = rng.standard_normal((N_KV, n_keys, D_HEAD))
    return q.astype(np.float32), keys.astype(np.float32), values.astype(np.float32)


def weights(q, keys, values, n_seq: int, start: int, first: int, window: int | None):
    """What attention.weighted_values does with them: (normalized weights [N_KV, GROUP, n_seq, n_keys], sums
    [N_KV, GROUP, n_seq], weighted values [N_KV, GROUP * n_seq, D_HEAD])."""
    w, sums, z = weighted(q, keys, values, n_seq, start, first, window)
    return (w / sums).reshape(N_KV, GROUP, n_seq, -1), sums.reshape(N_KV, GROUP, n_seq), z / sums


def reference(q, keys, seen: np.ndarray) -> np.ndarray:
    """Softmax weights in float64 of the scores in powers of 2, [N_KV, GROUP, n_seq, n_keys], hidden keys at 0."""
    scores = (q.astype(np.float64) @ keys.astype(np.float64).transpose(0, 2, 1)).reshape(N_KV, GROUP, *seen.shape)
    s = np.where(seen, scores, -np.inf)
    w = np.exp2(s - s.max(axis=-1, keepdims=True))
    return w / w.sum(axis=-1, keepdims=True)


# (start, first, window): keys from the cache and new ones; a sliding window whose first key is not position 0
MASKS = [(3, 0, None), (6, 3, 4)]
# Scores where 2**x is plain, where it would overflow float32 (200) and where it would underflow to 0 in every row,
# and the sums with it (-200): the last two are computed again with their max subtracted.
LEVELS = [0.0, 200.0, -200.0]


@pytest.mark.parametrize("keys_first", [False, True])
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("start,first,window", MASKS)
def test_weights_equal_the_float64_softmax_at_every_level_of_scores(level, start, first, window, keys_first,
                                                                    monkeypatch):
    monkeypatch.setattr(causal, "KEYS_FIRST", 1 if keys_first else 10**9)
    n_seq = 5
    seen = visible(start, n_seq, first, window)
    q, keys, values = heads(n_seq, seen.shape[1], level)
    got, _, z = weights(q, keys, values, n_seq, start, first, window)
    assert np.all(np.isfinite(got)) and np.all(np.isfinite(z))
    assert np.all(got[..., ~seen] == 0)
    # each weight: 2**x of an exact score (a few ulp, plus the subtraction's rounding where the max is subtracted),
    # over a sum of at most n_keys float32 terms (n_keys ulp): 2**-24 * (n_keys + 16) relative
    expected = reference(q, keys, seen)
    np.testing.assert_allclose(got, expected, rtol=2.0 ** -24 * (seen.shape[1] + 16), atol=1e-30)
    np.testing.assert_allclose(z, expected.reshape(N_KV, GROUP * n_seq, -1) @ values.astype(np.float64),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("keys_first", [False, True])
def test_scores_that_allow_it_are_exponentiated_without_subtracting(keys_first, monkeypatch):
    """At scores around 40 the rows' sums are those of 2**x of the scores as they are (around 2**40), not of the
    scores less their max (between 1 and n_keys)."""
    monkeypatch.setattr(causal, "KEYS_FIRST", 1 if keys_first else 10**9)
    start, first, window, n_seq = 3, 0, None, 5
    seen = visible(start, n_seq, first, window)
    q, keys, values = heads(n_seq, seen.shape[1], 40.0)
    _, sums, _ = weights(q, keys, values, n_seq, start, first, window)
    scores = (q.astype(np.float64) @ keys.astype(np.float64).transpose(0, 2, 1)).reshape(N_KV, GROUP, n_seq, -1)
    unshifted = np.where(seen, np.exp2(scores), 0).sum(axis=-1)
    np.testing.assert_allclose(sums, unshifted, rtol=2.0 ** -24 * (seen.shape[1] + 16))


@pytest.mark.parametrize("level", LEVELS)
def test_one_new_position_sees_every_key(level):
    q, keys, values = heads(1, 9, level)
    got, sums, _ = weights(q, keys, values, 1, 8, 0, None)
    assert np.all(np.isfinite(got)) and np.all(sums >= 1)  # its max subtracted: 2**0 = 1 at the max
    np.testing.assert_allclose(got, reference(q, keys, np.ones((1, 9), bool)), rtol=2.0 ** -24 * 25, atol=1e-30)


@pytest.mark.parametrize("keys_first", [False, True])
def test_a_rows_numbers_depend_on_that_row_alone(keys_first, monkeypatch):
    """engine/lanes.py attends by key head where the plain pass takes all of them at once: a row computed again
    (its scores would overflow) must not change the numbers of rows beside it, to the bit."""
    monkeypatch.setattr(causal, "KEYS_FIRST", 1 if keys_first else 10**9)
    start, first, window, n_seq = 3, 0, None, 5
    seen = visible(start, n_seq, first, window)
    q, keys, values = heads(n_seq, seen.shape[1], 0.0)
    q[1, 2, 0] = 200  # one row of the second key head
    together, sums, z = weights(q, keys, values, n_seq, start, first, window)
    assert 1 <= sums[1, 0, 2] <= seen.shape[1] and np.all(np.isfinite(together))  # computed again: its max subtracted
    for head in range(N_KV):
        one = slice(head, head + 1)
        w, s, alone = weighted(q[one], keys[one], values[one], n_seq, start, first, window)
        np.testing.assert_array_equal(together[head], (w / s).reshape(GROUP, n_seq, -1))
        np.testing.assert_array_equal(z[head], (alone / s)[0])
