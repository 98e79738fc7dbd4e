"""Attention's scores to the softmax's weights, under the causal mask (and a sliding window's).

The scores of a pass are the largest arrays it makes (engine/attention.py computes them by blocks of queries); here
they become their softmax's unnormalized weights in place, with as few passes over them as the numbers allow.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# What `mask` adds to hidden keys' scores: finite, unlike -inf, so that the hidden scores can be zeroed before 2**x
# (NumPy's float32 2**x takes a slow path, 3-32 ns a number instead of 0.2, below -126, -inf included).
HIDDEN = -1e30
# A row of a pass's scores whose max lies in this range (powers of 2) is exponentiated without subtracting its max
# first (softmax is the same for any shift): weights of at most 2**64, summed over keys and times the values, stay far
# below float32's largest number, 2**128, and beside a row's largest term, at least 2**-16, only terms under 2**-110
# of it underflow, far below float32's precision. Other rows (and one new position's, where it saves nothing) have
# their max subtracted.
SHIFTLESS = (-16.0, 64.0)


def exponentiated(scores: np.ndarray, by_query: np.ndarray, start: int, first: int, window: int | None) -> np.ndarray:
    """Scores [n_kv_head, rows, n_keys] (in powers of 2) to their softmax's unnormalized weights, in place, those of
    keys hidden from a query 0; returns the rows' sums [n_kv_head, rows, 1]. by_query: the same scores as
    [n_kv_head, group, n_seq, n_keys], for the masks.

    For one new position the max is subtracted and the rows summed as in the textbook. A longer pass (prefill, a
    lookup check) skips the subtraction for rows whose max allows it (SHIFTLESS), and sums the rows with a matrix
    product, which reads them faster than NumPy's pairwise sum: for a block of 113 queries of 3 heads against 2,048
    keys (one thread) the max, 2**x and the sums took 1.08 ms against 1.71 with the subtraction and np.sum, and
    SmolLM2's 4,096-token prefill 4-8% less (two runs of 6 and 8 alternating pairs, all faster). The float32 logits
    stayed as close to float64's (SmolLM2 and Gemma 3 270M on 2,048 tokens of Hamlet: 2.2e-5 and 1.7e-5, against
    2.4e-5 and 1.5e-5 before)."""
    if by_query.shape[-2] == 1:  # one new position: no mask
        scores -= scores.max(axis=-1, keepdims=True)  # 2**0 = 1 at each row's max: nothing overflows
        np.exp2(scores, out=scores)
        return scores.sum(axis=-1, keepdims=True)
    hide(by_query, start, first, window)  # a new position may look at itself and the past, never the future
    top = scores.max(axis=-1, keepdims=True)
    shiftless = (top >= SHIFTLESS[0]) & (top <= SHIFTLESS[1])  # per row (NaN: False), so that a row's weights
    if not shiftless.all():  # depend on it alone, however rows are grouped (engine/lanes.py splits them by key head)
        scores -= np.where(shiftless, 0, top)
    zero_hidden(by_query, start, first, window)  # hidden scores to 0 for 2**x, and their weights to 0 after it
    np.exp2(scores, out=scores)
    zero_hidden(by_query, start, first, window)
    return (scores @ np.ones(scores.shape[-1], scores.dtype))[..., None]


def hide(scores: np.ndarray, start: int, first: int, window: int | None) -> None:
    """Add HIDDEN to the scores [..., n_seq, n_keys] of keys the queries may not see, so that the rows' maxima
    are those of the keys they see."""
    part, where = masked_part(scores, start, first, window)
    part += mask(*where, scores.dtype)


def zero_hidden(weights: np.ndarray, start: int, first: int, window: int | None) -> None:
    """Set the values [..., n_seq, n_keys] of keys the queries may not see to 0."""
    part, where = masked_part(weights, start, first, window)
    part *= seen(*where, weights.dtype)


def masked_part(scores: np.ndarray, start: int, first: int, window: int | None):
    """The columns of scores [..., n_seq, n_keys] that the mask covers, and the mask's arguments. Without a
    window every key before the first query's position is seen: only the last n_seq columns need the mask."""
    end = start + scores.shape[-2]
    if window is None and start > first:
        return scores[..., start - first:], (start, end, start, None)
    return scores, (start, end, first, window)


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
