"""A TopK sparse autoencoder's forward pass and its gradients, written by hand (Gao et al. 2024, "Scaling
and evaluating sparse autoencoders"), computing in the dtype of its inputs (float64 for the tests).

    pre   = (x - b_dec) @ w_enc + b_enc                     [n, m]    m latents, d inputs
    acts  = ReLU of the k largest entries of each row of pre, 0 elsewhere
    x_hat = acts @ w_dec + b_dec                            [n, d]
    loss  = sum((x_hat - x)^2) / (n d)  +  aux_coef * scale * sum((e_hat - e)^2) / (n d)

The auxiliary loss (AuxK) gives dead latents a gradient: e = x - x_hat is the error left (a constant:
no gradient flows through it), and e_hat is its reconstruction by the k_aux largest dead latents alone
(without b_dec); scale = min(1, n_dead / k_aux) as in SAELens.

Sparsity is what makes this cheap: the encoder's product is the one dense cost. The decoder, and the
encoder's weight gradient, touch only the k active latents of each row (summed per latent by bincount),
and the auxiliary terms only the dead latents' columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Params:
    w_enc: np.ndarray  # [d, m] encoder
    b_enc: np.ndarray  # [m]
    w_dec: np.ndarray  # [m, d] decoder: one row per latent, unit norm while training
    b_dec: np.ndarray  # [d] subtracted before encoding, added after decoding


@dataclass(frozen=True)
class Sparse:
    """The k active latents of each row: their indices and activations."""
    idx: np.ndarray  # [n, k] latent indices
    acts: np.ndarray  # [n, k] activations (>= 0; ReLU of the pre-activation)


def init_params(d: int, m: int, rng: np.random.Generator, dtype=np.float32) -> Params:
    """Random unit decoder rows; the encoder their transpose (so each latent starts reading its own
    direction); zero biases (the inputs are centred before training)."""
    w_dec = rng.standard_normal((m, d))
    w_dec /= np.linalg.norm(w_dec, axis=1, keepdims=True)
    return Params(w_dec.T.astype(dtype), np.zeros(m, dtype), w_dec.astype(dtype), np.zeros(d, dtype))


def pre_acts(p: Params, x: np.ndarray) -> np.ndarray:
    return (x - p.b_dec) @ p.w_enc + p.b_enc  # [n, d] -> [n, m]


def top_k(pre: np.ndarray, k: int) -> Sparse:
    """The k largest pre-activations of each row, in column order, through a ReLU.

    A partition finds each row's k-th largest value and a comparison the columns at or above it (cheaper
    than an argpartition); a row with ties at that value falls back on argpartition."""
    n, m = pre.shape
    kth = np.partition(pre, m - k, axis=1)[:, m - k]  # [n]
    rows, cols = np.nonzero(pre >= kth[:, None])
    if len(cols) == n * k:
        idx = cols.reshape(n, k)
    else:
        idx = np.argpartition(pre, m - k, axis=1)[:, -k:]  # [n, k]
    return Sparse(idx, np.maximum(np.take_along_axis(pre, idx, axis=1), 0))


def decode(w_dec: np.ndarray, s: Sparse) -> np.ndarray:
    """sum_j acts[:, j] * w_dec[idx[:, j]]: [n, d], one gathered row per active latent (no b_dec)."""
    out = np.zeros((s.idx.shape[0], w_dec.shape[1]), w_dec.dtype)
    for j in range(s.idx.shape[1]):
        out += s.acts[:, j, None] * w_dec[s.idx[:, j]]
    return out


def encode(p: Params, x: np.ndarray, k: int) -> Sparse:
    return top_k(pre_acts(p, x), k)


def reconstruct(p: Params, x: np.ndarray, k: int) -> np.ndarray:
    return decode(p.w_dec, encode(p, x, k)) + p.b_dec


def act_grads(w_dec: np.ndarray, s: Sparse, g_out: np.ndarray) -> np.ndarray:
    """d loss / d pre at the active latents, from d loss / d (decoded output) g_out [n, d]: [n, k]."""
    g = np.empty(s.acts.shape, g_out.dtype)
    for j in range(s.idx.shape[1]):
        g[:, j] = np.einsum("nd,nd->n", g_out, w_dec[s.idx[:, j]])
    return g * (s.acts > 0)  # the ReLU's gate


def per_latent_sums(latents: np.ndarray, rows: np.ndarray, weights: np.ndarray, source_t: np.ndarray,
                    m: int) -> np.ndarray:
    """out[:, l] = sum over entries e with latents[e] == l of weights[e] * source_t[:, rows[e]]: [d, m].

    A sparse-times-dense product: for the k active latents of n rows, n k d multiply-adds (one bincount
    per input dimension) where a dense product would take n m d."""
    out = np.empty((source_t.shape[0], m), source_t.dtype)
    for j, column in enumerate(source_t):
        out[j] = np.bincount(latents, weights=column[rows] * weights, minlength=m)
    return out


def sparse_grads(p: Params, xc: np.ndarray, s: Sparse, g_pre: np.ndarray, g_out: np.ndarray):
    """Gradients of w_enc [d, m], b_enc [m], w_dec [m, d] through the active latents of `s`; xc = x - b_dec."""
    n, k = s.idx.shape
    m = p.w_dec.shape[0]
    latents, rows = s.idx.reshape(-1), np.repeat(np.arange(n), k)  # [n k] each
    g_pre_flat = g_pre.reshape(-1)
    g_w_dec = per_latent_sums(latents, rows, s.acts.reshape(-1), np.ascontiguousarray(g_out.T), m).T
    g_w_enc = per_latent_sums(latents, rows, g_pre_flat, np.ascontiguousarray(xc.T), m)
    g_b_enc = np.bincount(latents, weights=g_pre_flat, minlength=m).astype(g_pre.dtype)
    return g_w_enc, g_b_enc, np.ascontiguousarray(g_w_dec)


@dataclass(frozen=True)
class Step:
    loss: float  # the main reconstruction loss (mean squared error per input dimension)
    aux: float  # the auxiliary loss, already multiplied by its coefficient and scale
    sparse: Sparse  # the batch's active latents
    grads: Params  # gradients of loss + aux


def loss_and_grads(p: Params, x: np.ndarray, k: int, dead: np.ndarray, k_aux: int, aux_coef: float) -> Step:
    """The losses of a batch x [n, d] and their gradients; `dead` [m] bool marks the latents the auxiliary
    loss may use."""
    n, d = x.shape
    xc = x - p.b_dec
    pre = xc @ p.w_enc + p.b_enc  # [n, m]: the one dense product
    s = top_k(pre, k)
    err = decode(p.w_dec, s) + p.b_dec - x  # x_hat - x
    g_out = err * (2 / (n * d))
    g_pre = act_grads(p.w_dec, s, g_out)
    g_w_enc, g_b_enc, g_w_dec = sparse_grads(p, xc, s, g_pre, g_out)
    aux = 0.0
    if aux_coef > 0 and dead.any():
        aux = aux_grads(p, xc, pre, -err, dead, k_aux, aux_coef, (g_w_enc, g_b_enc, g_w_dec))
    g_b_dec = g_out.sum(axis=0) - p.w_enc @ g_b_enc  # via x_hat's b_dec, and via every pre's -b_dec
    loss = float(np.einsum("nd,nd->", err, err) / (n * d))
    return Step(loss, aux, s, Params(g_w_enc, g_b_enc, g_w_dec, g_b_dec))


def aux_grads(p: Params, xc, pre, e, dead, k_aux: int, aux_coef: float, grads) -> float:
    """Add the AuxK loss's gradients into `grads` (w_enc, b_enc, w_dec; in place) and return the loss.

    Only the dead latents' columns take part, as dense [n, n_dead] products (k_aux is large: d/2):
    e_hat = relu(top k_aux of pre[:, dead]) @ w_dec[dead]."""
    n, d = xc.shape
    cols = np.flatnonzero(dead)  # [n_dead]
    s = top_k(pre[:, cols], min(k_aux, len(cols)))  # indices into cols
    acts = np.zeros((n, len(cols)), pre.dtype)  # [n, n_dead]
    np.put_along_axis(acts, s.idx, s.acts, axis=1)
    scale = aux_coef * min(1.0, len(cols) / k_aux)
    w_dead = p.w_dec[cols]  # [n_dead, d]
    resid = acts @ w_dead - e  # e_hat - e: [n, d]
    g_out = resid * (2 * scale / (n * d))
    g_pre = (g_out @ w_dead.T) * (acts > 0)  # [n, n_dead]: only the active ones pass the top-k and the ReLU
    grads[0][:, cols] += xc.T @ g_pre
    grads[1][cols] += g_pre.sum(axis=0)
    grads[2][cols] += acts.T @ g_out
    return float(scale * np.einsum("nd,nd->", resid, resid) / (n * d))
