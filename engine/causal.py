"""Attention's queries and keys to the softmax's weights, under the causal mask (and a sliding window's).

The scores of a pass are the largest arrays it makes (engine/attention.py computes them by blocks of queries); here
they become their softmax's unnormalized weights in place, with as few passes over them as the numbers allow.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# What `mask` adds to hidden keys' scores: finite, unlike -inf, so that the hidden scores can be zeroed before 2**x
# (NumPy's float32 2**x takes a slow path, 3-32 ns a number instead of 0.2, below -126, -inf included).
HIDDEN = -1e30
# A pass of several positions exponentiates its scores as they are (softmax is the same for any shift). A row whose
# weights sum to at least this, and to a finite number, as do its weighted values, has lost nothing: its largest
# weight is at least SMALLEST_SUM / n_keys, beside which only terms under 2**-126 underflow (2**-93 of it, at n_keys
# 2**17), far below float32's precision. Other rows are computed again with their max subtracted (see `weighted`).
SMALLEST_SUM = 2.0 ** -16
# From this many keys on, a pass's scores are computed as keys times queries (see `unshifted`).
KEYS_FIRST = 512


def weighted(q: np.ndarray, keys: np.ndarray, values: np.ndarray, n_seq: int, start: int, first: int,
             window: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Queries [n_kv_head, rows, d_head] (rows: each key head's query heads' n_seq positions; scaled so that the
    scores are in powers of 2) against keys and values [n_kv_head, n_keys, d_head] of positions first..: the
    softmax's unnormalized weights [n_kv_head, rows, n_keys], those of keys hidden from a query 0, the rows' sums
    [n_kv_head, rows, 1], and the weighted values weights @ values [n_kv_head, rows, d_head], not yet divided.

    For one new position the max is subtracted as in the textbook. A longer pass (prefill, a lookup check) first
    tries its scores as they are (`unshifted`); a row whose sum or weighted values that leaves under SMALLEST_SUM
    or not finite is computed again as the textbook does. Each row is decided alone, so that its numbers do not
    depend on which rows were computed with it (engine/lanes.py attends by key head, the plain pass all key heads
    at once)."""
    if n_seq == 1:
        weights, sums = textbook(q @ keys.transpose(0, 2, 1), n_seq, start, first, window)
        return weights, sums, weights @ values
    with np.errstate(over="ignore", invalid="ignore"):  # 2**x past float32's range: such rows are computed again
        weights, sums = unshifted(q, keys, n_seq, start, first, window)
        z = weights @ values
    redo = ~(np.isfinite(z).all(axis=-1) & np.isfinite(sums[..., 0]) & (sums[..., 0] >= SMALLEST_SUM))
    for head in np.flatnonzero(redo.any(axis=1)):
        rows = redo[head]
        w, s = textbook(q[head:head + 1] @ keys[head:head + 1].transpose(0, 2, 1), n_seq, start, first, window)
        weights[head, rows], sums[head, rows], z[head, rows] = w[0, rows], s[0, rows], (w[0] @ values[head])[rows]
    return weights, sums, z


def unshifted(q: np.ndarray, keys: np.ndarray, n_seq: int, start: int, first: int,
              window: int | None) -> tuple[np.ndarray, np.ndarray]:
    """`weighted`'s weights and sums without subtracting a row's max from its scores (one pass over them fewer),
    each row summed by a product with ones, which reads them faster than NumPy's pairwise sum. Against KEYS_FIRST
    keys or more the scores are computed as keys times queries, which OpenBLAS runs faster for such d_head-long
    sums (the weights are then a transposed view); for fewer, queries times keys. A block of 128 queries of 3 key
    heads against 1,024, 512 and 128 keys (one thread, medians of 5 x 30 runs): 3.68, 2.10 and 0.53 ms, against
    4.30, 2.34 and 0.62 with each row's max taken first (as the previous code did). SmolLM2's 4,096-token prefill
    took 0-3% less (three runs of 6 to 12 alternating pairs; the longest 2.1%, 8 of 12 pairs faster), its
    128-token prefill as long (20 pairs)."""
    n_kv_head, n_keys = keys.shape[:2]
    keys_first = n_keys >= KEYS_FIRST
    scores = keys @ q.transpose(0, 2, 1) if keys_first else q @ keys.transpose(0, 2, 1)
    weights = scores.transpose(0, 2, 1) if keys_first else scores  # [n_kv_head, rows, n_keys] either way
    if keys_first:  # views in the scores' own order, for the masks: by key, or by query position
        masked, zero = scores.reshape(n_kv_head, n_keys, -1, n_seq), zero_hidden_by_key
    else:
        masked, zero = weights.reshape(n_kv_head, -1, n_seq, n_keys), zero_hidden
    zero(masked, start, first, window)  # hidden scores to 0 for 2**x, and their weights to 0 after it
    np.exp2(scores, out=scores)
    zero(masked, start, first, window)
    ones = np.ones(n_keys, scores.dtype)
    sums = ones @ scores if keys_first else scores @ ones  # [n_kv_head, rows]
    return weights, sums[..., None]


def textbook(scores: np.ndarray, n_seq: int, start: int, first: int, window: int | None):
    """Scores [n_kv_head, rows, n_keys] (powers of 2) to their unnormalized weights in place, each row's max
    subtracted first so that 2**x is at most 1 and the largest is 1; (weights, sums [n_kv_head, rows, 1])."""
    by_query = scores.reshape(scores.shape[0], -1, n_seq, scores.shape[-1])  # the masks go by query position
    if n_seq > 1:  # one new position sees every key
        hide(by_query, start, first, window)  # a new position may look at itself and the past, never the future
    scores -= scores.max(axis=-1, keepdims=True)
    if n_seq > 1:
        zero_hidden(by_query, start, first, window)  # hidden scores to 0 for 2**x, and their weights to 0 after it
    np.exp2(scores, out=scores)
    if n_seq > 1:
        zero_hidden(by_query, start, first, window)
    return scores, scores.sum(axis=-1, keepdims=True)


def hide(scores: np.ndarray, start: int, first: int, window: int | None) -> None:
    """Add HIDDEN to the scores [..., n_seq, n_keys] of keys the queries may not see, so that the rows' maxima
    are those of the keys they see."""
    lo, where = covered(start, scores.shape[-2], first, window)
    scores[..., lo:] += mask(*where, scores.dtype)


def zero_hidden(weights: np.ndarray, start: int, first: int, window: int | None) -> None:
    """Set the values [..., n_seq, n_keys] of keys the queries may not see to 0."""
    lo, where = covered(start, weights.shape[-2], first, window)
    weights[..., lo:] *= seen(*where, weights.dtype)


def zero_hidden_by_key(scores: np.ndarray, start: int, first: int, window: int | None) -> None:
    """zero_hidden for scores laid out by key, [..., n_keys, group, n_seq] (computed as keys times queries): the
    mask goes over them in their own order, where through the transposed view NumPy's steps cross rows (a block of
    128 queries of 3 key heads, 512 keys or more, one thread: 28 against 300 us). The same numbers, and prefill
    1.02-1.11x as fast (alternating passes in one process, medians of the pairs' ratios): SmolLM2 at 512 tokens
    1.021x (11 of 16 pairs faster), at 4,096 1.030x (6 of 6), GPT-2 small at 512 1.023x (8 of 12), Gemma 3
    270M at 2,048 1.111x (8 of 8)."""
    lo, where = covered(start, scores.shape[-1], first, window)
    scores[..., lo:, :, :] *= seen_by_key(*where, scores.dtype)[:, None, :]


def covered(start: int, n_seq: int, first: int, window: int | None) -> tuple[int, tuple]:
    """The first of the keys (positions first..start + n_seq - 1) that the mask of queries start.. covers, as an
    index, and the mask's arguments. Without a window every key before the first query's position is seen: only
    the last n_seq keys need the mask."""
    end = start + n_seq
    if window is None and start > first:
        return start - first, (start, end, start, None)
    return 0, (start, end, first, window)


@lru_cache(maxsize=16)  # every layer of a pass has the same (a block: [n_seq, n_seq] without a window)
def mask(start: int, end: int, first: int, window: int | None, dtype) -> np.ndarray:
    """HIDDEN where query position start.. (rows) may not see key position first.. (columns), else 0:
    [n_seq, n_keys] (read-only: shared between calls)."""
    query, key = np.arange(start, end)[:, None], np.arange(first, end)[None, :]
    hidden = key > query
    if window is not None:
        hidden |= query - key >= window  # a local layer sees `window` positions, its own included
    out = np.where(hidden, dtype.type(HIDDEN), dtype.type(0))
    out.flags.writeable = False
    return out


@lru_cache(maxsize=16)
def seen(start: int, end: int, first: int, window: int | None, dtype) -> np.ndarray:
    """1 where `mask` is 0, 0 where it hides (read-only: shared between calls)."""
    out = (mask(start, end, first, window, dtype) == 0).astype(dtype)
    out.flags.writeable = False
    return out


@lru_cache(maxsize=16)
def seen_by_key(start: int, end: int, first: int, window: int | None, dtype) -> np.ndarray:
    """`seen` transposed, [n_keys, n_seq] (read-only: shared between calls)."""
    out = np.ascontiguousarray(seen(start, end, first, window, dtype).T)
    out.flags.writeable = False
    return out
