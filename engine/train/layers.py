"""Each step of the transformer as a forward / backward pair, llm.c style.

A `*_forward` returns its output and what its backward needs (the saved activations); the matching
`*_backward` takes the gradient of the loss with respect to that output and returns the gradients of
its inputs and parameters. Arrays carry any leading batch dimensions ([batch, n_seq, ...]) and compute in
their own dtype: float32 for training, float64 for the tests' reference. Derivations are in the comments.
"""

from __future__ import annotations

import numpy as np


GELU_C = 0.7978845608028654  # sqrt(2 / pi)
ATTN_BLOCK = 64  # query positions per block of causal attention (see attention_forward); SmolLM2 at 4 x 256,
# one thread: a layer's attention forward + backward took 12 + 23 ms of CPU as one block, 9 + 13 ms in blocks of 64


def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    y = x @ w.T  # [..., in] -> [..., out]
    return y + b if b is not None else y


def linear_backward(dy: np.ndarray, x: np.ndarray, w: np.ndarray, *, want_w: bool = True):
    """y = x W^T + b: dx = dy W, dW = dy^T x (summed over every row), db = sum of dy. (dx, dW, db)."""
    dx = dy @ w  # [..., out] -> [..., in]
    if not want_w:
        return dx, None, None
    rows_dy, rows_x = dy.reshape(-1, dy.shape[-1]), x.reshape(-1, x.shape[-1])
    return dx, rows_dy.T @ rows_x, rows_dy.sum(axis=0)  # dW: [out, in]


def layernorm_forward(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float):
    """y = xhat * g + b with xhat = (x - mean) * rstd, rstd = 1 / sqrt(var + eps). Saves (xhat, rstd)."""
    centered = x - x.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt((centered * centered).mean(axis=-1, keepdims=True) + eps)  # [..., 1]
    xhat = centered * rstd
    return xhat * g + b, (xhat, rstd)


def layernorm_backward(dy: np.ndarray, saved, g: np.ndarray):
    """dxhat = dy g; dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)): the mean and the variance
    both depend on every x of the row, which the two subtracted means account for. (dx, dg, db)."""
    xhat, rstd = saved
    dxhat = dy * g
    dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True) - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    lead = tuple(range(dy.ndim - 1))
    return dx, (dy * xhat).sum(axis=lead), dy.sum(axis=lead)


def rmsnorm_forward(x: np.ndarray, g: np.ndarray, eps: float):
    """y = xhat * g with xhat = x * rstd, rstd = 1 / sqrt(mean(x^2) + eps). Saves (xhat, rstd)."""
    rstd = 1.0 / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)  # [..., 1]
    xhat = x * rstd
    return xhat * g, (xhat, rstd)


def rmsnorm_backward(dy: np.ndarray, saved, g: np.ndarray):
    """LayerNorm's backward without the centring term: dx = rstd (dxhat - xhat mean(dxhat xhat)). (dx, dg)."""
    xhat, rstd = saved
    dxhat = dy * g
    dx = rstd * (dxhat - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    return dx, (dy * xhat).sum(axis=tuple(range(dy.ndim - 1)))


def gelu_forward(x: np.ndarray):
    """GPT-2's tanh GELU: 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3). Saves (x, tanh(u))."""
    c = x.dtype.type
    t = np.tanh(c(GELU_C) * (x + c(0.044715) * x * x * x))
    return c(0.5) * x * (1 + t), (x, t)


def gelu_backward(dy: np.ndarray, saved) -> np.ndarray:
    """d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx, with du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)."""
    x, t = saved
    c = x.dtype.type
    du = c(GELU_C) * (1 + c(3 * 0.044715) * x * x)
    return dy * (c(0.5) * (1 + t) + c(0.5) * x * (1 - t * t) * du)


def swiglu_forward(h: np.ndarray, n_ff: int):
    """SiLU(gate) * up, gate and up the two halves of w_in's output: [..., 2 n_ff] -> [..., n_ff].
    Saves (gate, up, sigmoid(gate))."""
    gate, up = h[..., :n_ff], h[..., n_ff:]
    s = np.negative(gate)  # sigmoid(gate) = 1 / (1 + exp(-gate)), each step in place in this one array
    with np.errstate(over="ignore"):  # exp(-gate) overflowing to inf gives sigmoid 0, the limit
        np.exp(s, out=s)
    s += 1
    np.reciprocal(s, out=s)
    out = gate * s
    out *= up
    return out, (gate, up, s)


def swiglu_backward(dy: np.ndarray, saved) -> np.ndarray:
    """d SiLU(g) / dg = s (1 + g (1 - s)); d/d up = SiLU(gate). Returns [..., 2 n_ff], gate half first, each half
    computed in place in its part of the result."""
    gate, up, s = saved
    n_ff = gate.shape[-1]
    dh = np.empty(dy.shape[:-1] + (2 * n_ff,), dy.dtype)
    d_gate, d_up = dh[..., :n_ff], dh[..., n_ff:]
    np.subtract(1, s, out=d_gate)
    d_gate *= gate
    d_gate += 1
    d_gate *= s
    d_gate *= up
    d_gate *= dy  # dy up s (1 + gate (1 - s))
    np.multiply(gate, s, out=d_up)
    d_up *= dy  # dy SiLU(gate)
    return dh


def rope_forward(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate pairs (x[i], x[i + d/2]) by each position's angle: x cos + rotate_half(x) sin."""
    half = x.shape[-1] // 2
    return x * cos + np.concatenate([-x[..., half:], x[..., :half]], axis=-1) * sin


def rope_backward(dy: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """A rotation's gradient is the inverse rotation: rotate_half's transpose maps (a, b) to (b, -a)."""
    half = dy.shape[-1] // 2
    ds = dy * sin
    return dy * cos + np.concatenate([ds[..., half:], -ds[..., :half]], axis=-1)


def attention_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, window: int | None = None):
    """Causal attention with grouped-query heads, ATTN_BLOCK query positions at a time, over the last `window`
    positions if given (Gemma's local layers: see block_keys).

    q: [batch, n_head, n_seq, d_head]; k, v: [batch, n_kv_head, n_seq, d_head]; each key/value head serves
    n_head / n_kv_head query heads (a reshape, never a copy of k and v). Returns z like q, saves (q / sqrt(d), k, v,
    each block's p, window). The queries of positions [lo, hi) see keys [start, hi) only: a block's scores skip the
    keys after it, all masked, so the scores, their softmax and both products shrink to (n + ATTN_BLOCK) / 2n of the
    full square (and to about window + ATTN_BLOCK keys a block with a window).
    """
    batch, n_head, n_seq, d_head = q.shape
    n_kv = k.shape[1]
    q5 = q.reshape(batch, n_kv, n_head // n_kv, n_seq, d_head)  # [batch, n_kv_head, group, n_seq, d_head]
    q5 = q5 * q5.dtype.type(1 / np.sqrt(d_head))  # scaled here, on [.., d_head], not on the wider scores
    k5, v5 = k[:, :, None], v[:, :, None]  # [batch, n_kv_head, 1, n_seq, d_head]: broadcast over the group
    z, probs = np.empty_like(q5), []
    for lo, hi, start in block_keys(n_seq, window):
        scores = q5[..., lo:hi, :] @ k5[..., start:hi, :].swapaxes(-1, -2)  # [.., group, hi - lo, hi - start]
        mask_block(scores, lo, start, window)
        p = softmax_in_place(scores)
        np.matmul(p, v5[..., start:hi, :], out=z[..., lo:hi, :])  # [.., hi - lo, hi - start] @ [.., hi - start, d_head]
        probs.append(p)
    return z.reshape(q.shape), (q5, k, v, probs, window)


def block_keys(n_seq: int, window: int | None) -> list[tuple[int, int, int]]:
    """(lo, hi, start) of each block of queries: the keys it may see are [start, hi). With a window a position
    sees `window` positions, its own included (as engine/causal.mask), so the block's first sees lo - window + 1."""
    return [(lo, hi, 0 if window is None else max(0, lo - window + 1)) for lo, hi in causal_blocks(n_seq)]


def mask_block(scores: np.ndarray, lo: int, start: int, window: int | None) -> None:
    """-inf, in place, on the scores [.., dest lo.., src start..] a position may not see: a later key (src > dest)
    and, with a window, one too far back (dest - src >= window). The backward needs no mask: softmax gives those
    scores probability 0, hence gradient 0."""
    n, n_keys = scores.shape[-2:]
    scores[..., lo - start:] += future_mask(n, scores.dtype)  # the block's own square: no looking at the future
    if window is not None:
        dest, src = np.arange(lo, lo + n)[:, None], np.arange(start, start + n_keys)[None, :]
        scores[..., dest - src >= window] = -np.inf  # [n, n_keys] selects the same cells of every head


def attention_backward(dz: np.ndarray, saved):
    """Through z = p v, p = softmax(s), s = q k^T / sqrt(d), block by block as the forward pass: softmax's backward
    is p (dp - sum(dp p)). A key/value head's gradient sums over the query heads of its group. (dq, dk, dv)."""
    q5, k, v, probs, window = saved  # q5 already divided by sqrt(d_head)
    dz5 = dz.reshape(q5.shape)
    k5, v5 = k[:, :, None], v[:, :, None]
    dq, dk, dv = np.empty_like(q5), np.zeros_like(k), np.zeros_like(v)
    for (lo, hi, start), p in zip(block_keys(q5.shape[-2], window), probs):
        dz_block = dz5[..., lo:hi, :]
        ds = dz_block @ v5[..., start:hi, :].swapaxes(-1, -2)  # dp: [batch, n_kv_head, group, hi - lo, hi - start]
        dv[:, :, start:hi] += group_rows(p).swapaxes(-1, -2) @ group_rows(dz_block)  # [batch, n_kv_head, .., d_head]
        ds -= (ds * p).sum(axis=-1, keepdims=True)
        ds *= p  # ds = p (dp - sum(dp p)), in dp's memory
        np.matmul(ds, k5[..., start:hi, :], out=dq[..., lo:hi, :])
        dk[:, :, start:hi] += group_rows(ds).swapaxes(-1, -2) @ group_rows(q5[..., lo:hi, :])  # q5 brings 1/sqrt(d)
    dq *= dq.dtype.type(1 / np.sqrt(q5.shape[-1]))
    return dq.reshape(dz.shape), dk, dv


def causal_blocks(n_seq: int) -> list[tuple[int, int]]:
    """(lo, hi) of each block of ATTN_BLOCK query positions."""
    return [(lo, min(lo + ATTN_BLOCK, n_seq)) for lo in range(0, n_seq, ATTN_BLOCK)]


def group_rows(x: np.ndarray) -> np.ndarray:
    """[batch, n_kv_head, group, rows, cols] -> [batch, n_kv_head, group * rows, cols]: a key/value head's gradient
    sums over the rows of all its query heads, so one product with group * rows terms does the sum."""
    return x.reshape(x.shape[0], x.shape[1], -1, x.shape[-1])


def future_mask(n: int, dtype) -> np.ndarray:
    """[n, n]: -inf above the diagonal (a later key), 0 elsewhere."""
    return np.triu(np.full((n, n), -np.inf, dtype), k=1)


def softmax_in_place(x: np.ndarray) -> np.ndarray:
    """softmax along the last axis, overwriting x (the scores, used once): no array of their size is allocated."""
    x -= x.max(axis=-1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    return x


def embedding_backward(dx: np.ndarray, ids: np.ndarray, n_vocab: int, into: np.ndarray | None = None) -> np.ndarray:
    """x = E[ids]: each row of dx adds to the row of its token (a token seen twice gets both). Adds to `into`
    (e.g. a tied unembedding's gradient, updated in place) rather than to zeros when given."""
    d_embed = np.zeros((n_vocab, dx.shape[-1]), dx.dtype) if into is None else into
    np.add.at(d_embed, ids.reshape(-1), dx.reshape(-1, dx.shape[-1]))
    return d_embed


def cross_entropy_forward(logits: np.ndarray, targets: np.ndarray, mask: np.ndarray, count: float | None = None):
    """Mean of -log p(target) over the positions where mask is 1: logits [..., n_vocab], targets and mask [...];
    `count` is the number of positions the mean divides by (default: mask's; a chunk of a batch gives the batch's).
    log p(target) = shifted[target] - log(sum(exp(shifted))) with shifted = logits - max: one exp of the logits'
    size, whose result the backward pass reuses. Returns (loss, saved (exp(shifted), its sums, targets, weights))."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    picked = np.take_along_axis(shifted, targets[..., None], axis=-1)[..., 0]
    exps = np.exp(shifted, out=shifted)  # in place: the logits' size is the largest array
    total = exps.sum(axis=-1)  # [...]
    count = max(float(mask.sum()), 1.0) if count is None else count
    weights = mask.astype(logits.dtype) / logits.dtype.type(count)  # each counted position's share
    loss = -float(((picked - np.log(total)) * weights).sum())
    return loss, (exps, total, targets, weights)


def cross_entropy_backward(saved) -> np.ndarray:
    """d loss / d logits = (softmax - one_hot(target)) times the position's weight: exp(shifted) * weight / sum,
    then minus the weight at the target, in the memory of the saved exps (backward runs once per forward)."""
    exps, total, targets, weights = saved
    d = exps
    d *= (weights / total)[..., None]  # normalise and weigh in one pass
    np.put_along_axis(d, targets[..., None], np.take_along_axis(d, targets[..., None], axis=-1) - weights[..., None],
                      axis=-1)
    return d
