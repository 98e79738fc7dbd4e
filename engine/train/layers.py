"""Each step of the transformer as a forward / backward pair, llm.c style.

A `*_forward` returns its output and what its backward needs (the saved activations); the matching
`*_backward` takes the gradient of the loss with respect to that output and returns the gradients of
its inputs and parameters. Arrays carry any leading batch dimensions ([batch, n_seq, ...]) and compute in
their own dtype: float32 for training, float64 for the tests' reference. Derivations are in the comments.
"""

from __future__ import annotations

import numpy as np

from ..nn import log_softmax, softmax

GELU_C = 0.7978845608028654  # sqrt(2 / pi)


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
    with np.errstate(over="ignore"):  # exp(-gate) overflowing to inf gives sigmoid 0, the limit
        s = 1 / (1 + np.exp(-gate))
    return gate * s * up, (gate, up, s)


def swiglu_backward(dy: np.ndarray, saved) -> np.ndarray:
    """d SiLU(g) / dg = s (1 + g (1 - s)); d/d up = SiLU(gate). Returns [..., 2 n_ff], gate half first."""
    gate, up, s = saved
    d_gate = dy * up * s * (1 + gate * (1 - s))
    return np.concatenate([d_gate, dy * gate * s], axis=-1)


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
    """Causal attention with grouped-query heads, over the last `window` positions if given (see causal_mask).

    q: [batch, n_head, n_seq, d_head]; k, v: [batch, n_kv_head, n_seq, d_head]; each key/value head serves
    n_head / n_kv_head query heads (a reshape, never a copy of k and v). Returns z like q, saves (q, k, v, p).
    """
    batch, n_head, n_seq, d_head = q.shape
    n_kv = k.shape[1]
    q5 = q.reshape(batch, n_kv, n_head // n_kv, n_seq, d_head)  # [batch, n_kv_head, group, n_seq, d_head]
    scores = q5 @ k[:, :, None].swapaxes(-1, -2)  # [batch, n_kv_head, group, n_seq (dest), n_seq (src)]
    scores *= scores.dtype.type(1 / np.sqrt(d_head))
    scores += causal_mask(n_seq, window, scores.dtype)  # no looking at the future (nor too far back)
    p = softmax(scores)
    z = p @ v[:, :, None]  # [batch, n_kv_head, group, n_seq, d_head]
    return z.reshape(q.shape), (q5, k, v, p)


def causal_mask(n_seq: int, window: int | None, dtype) -> np.ndarray:
    """-inf where position dest (row) may not see position src (column): src > dest, and with a window (Gemma's
    local layers, as engine/attention.mask) dest - src >= window, so that a position sees `window` positions, its
    own included. The backward needs no mask: softmax gives those scores probability 0, hence gradient 0."""
    hidden = np.triu(np.ones((n_seq, n_seq), bool), k=1)
    if window is not None:
        hidden |= np.tril(np.ones((n_seq, n_seq), bool), k=-window)
    return np.where(hidden, dtype.type(-np.inf), dtype.type(0))  # [n_seq (dest), n_seq (src)]


def attention_backward(dz: np.ndarray, saved):
    """Through z = p v, p = softmax(s), s = q k^T / sqrt(d): softmax's backward is p (dp - sum(dp p)).
    A key/value head's gradient sums over the query heads of its group. (dq, dk, dv)."""
    q5, k, v, p = saved
    dz5 = dz.reshape(q5.shape)
    dp = dz5 @ v[:, :, None].swapaxes(-1, -2)  # [batch, n_kv_head, group, n_seq, n_seq]
    dv = (p.swapaxes(-1, -2) @ dz5).sum(axis=2)  # [batch, n_kv_head, n_seq, d_head]
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    ds *= ds.dtype.type(1 / np.sqrt(q5.shape[-1]))
    dq = (ds @ k[:, :, None]).reshape(dz.shape)
    dk = (ds.swapaxes(-1, -2) @ q5).sum(axis=2)
    return dq, dk, dv


def embedding_backward(dx: np.ndarray, ids: np.ndarray, n_vocab: int, into: np.ndarray | None = None) -> np.ndarray:
    """x = E[ids]: each row of dx adds to the row of its token (a token seen twice gets both). Adds to `into`
    (e.g. a tied unembedding's gradient, updated in place) rather than to zeros when given."""
    d_embed = np.zeros((n_vocab, dx.shape[-1]), dx.dtype) if into is None else into
    np.add.at(d_embed, ids.reshape(-1), dx.reshape(-1, dx.shape[-1]))
    return d_embed


def cross_entropy_forward(logits: np.ndarray, targets: np.ndarray, mask: np.ndarray, count: float | None = None):
    """Mean of -log p(target) over the positions where mask is 1: logits [..., n_vocab], targets and mask [...];
    `count` is the number of positions the mean divides by (default: mask's; a chunk of a batch gives the batch's).
    Returns (loss, saved (probabilities, targets, mask weights))."""
    logp = log_softmax(logits)
    picked = np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    count = max(float(mask.sum()), 1.0) if count is None else count
    weights = mask.astype(logits.dtype) / logits.dtype.type(count)  # each counted position's share
    loss = -float((picked * weights).sum())
    np.exp(logp, out=logp)  # the probabilities, in the same memory: the logits' size is the largest array
    return loss, (logp, targets, weights)


def cross_entropy_backward(saved) -> np.ndarray:
    """d loss / d logits = (softmax - one_hot(target)) times the position's weight."""
    probs, targets, weights = saved
    d = probs  # reused in place: backward runs once per forward
    np.put_along_axis(d, targets[..., None], np.take_along_axis(d, targets[..., None], axis=-1) - 1, axis=-1)
    d *= weights[..., None]
    return d
