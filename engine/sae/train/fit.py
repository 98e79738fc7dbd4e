"""Train a TopK SAE on collected activations: normalise, Adam steps with unit-norm decoder rows, fold.

The inputs are centred and scaled, x' = (x - mean) / scale with scale chosen so that E||x'||^2 = d (the
loss is then a fraction of the variance, whatever the model's residual norm), and the result is folded
back so that the saved SAE reads raw residuals (`fold`). Each decoder row is kept at unit norm: the part
of its gradient along the row is removed before the step (it would only change the norm) and the row is
renormalised after it, as in Gao et al. and SAELens. A latent that has not fired for `dead_after`
training tokens counts as dead and the auxiliary loss (topk.py) pulls it towards the error left.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ...train.optim import schedule
from .topk import Params, init_params, loss_and_grads

CHUNK = 65536  # rows read at once from the memory-mapped activations
SINK_FACTOR = 10.0  # rows with a norm over this many times the median are attention sinks: left out


@dataclass(frozen=True)
class FitOptions:
    latents: int  # m, the SAE's width
    k: int  # active latents per token
    lr: float = 3e-3  # Adam's peak learning rate (after a warm-up; cosine decay to 10% at the end)
    batch: int = 512  # tokens per step
    epochs: float = 4.0  # passes over the collected tokens
    seed: int = 0  # initialisation and the order of the tokens
    aux_coef: float = 1 / 32  # AuxK's coefficient (Gao et al.)
    k_aux: int | None = None  # dead latents used by AuxK; None: d // 2
    dead_after: int = 50_000  # training tokens without firing after which a latent counts as dead
    warmup: int = 50  # steps of linear learning-rate warm-up


@dataclass(frozen=True)
class Normalizer:
    mean: np.ndarray  # [d] float64 mean of the training inputs kept
    scale: float  # sqrt(E||x - mean||^2 / d) over them
    max_norm: float  # inputs with a larger norm are left out (attention sinks: see `normalizer`)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x.astype(np.float64) - self.mean) / self.scale).astype(np.float32)

    def kept(self, x: np.ndarray) -> np.ndarray:
        """[n] bool: the rows of raw inputs x [n, d] the SAE is for."""
        return np.linalg.norm(np.asarray(x, np.float32), axis=1) <= self.max_norm


@dataclass(frozen=True)
class Progress:
    step: int
    steps: int
    loss: float  # the step's reconstruction loss: about 1 - fraction of variance explained
    aux: float
    dead: float  # fraction of latents dead now


def norms(x: np.ndarray) -> np.ndarray:
    """[n] the norm of each row of x [n, d], CHUNK rows at a time."""
    return np.concatenate([np.linalg.norm(np.asarray(x[lo:lo + CHUNK], np.float32), axis=1)
                           for lo in range(0, len(x), CHUNK)])


def normalizer(x: np.ndarray, row_norms: np.ndarray) -> Normalizer:
    """The mean and scale of the rows of x [n, d] (float16 on disk is fine) kept, in float64.

    Kept: rows whose norm is at most SINK_FACTOR times the median. Besides the first position of a
    sequence (left out when collecting), a few others become attention sinks with residuals a hundred
    times larger (in SmolLM2: a blank line or a run of " ." early in a window, about 1 row in 5000); they
    would dominate the squared error. The SAE is neither trained on them nor applied to them."""
    max_norm = SINK_FACTOR * float(np.median(row_norms))
    total, squares, count = np.zeros(x.shape[1]), 0.0, 0
    for lo in range(0, len(x), CHUNK):
        part = np.asarray(x[lo:lo + CHUNK], np.float64)[row_norms[lo:lo + CHUNK] <= max_norm]
        total += part.sum(axis=0)
        squares += float(np.einsum("nd,nd->", part, part))
        count += len(part)
    mean = total / count
    variance = squares / count - float(mean @ mean)  # E||x - mean||^2
    return Normalizer(mean, math.sqrt(max(variance, 1e-30) / x.shape[1]), max_norm)


def fold(p: Params, norm: Normalizer) -> Params:
    """The SAE on raw inputs that equals `p` on normalised ones: with x' = (x - mu) / s, encoding
    (x' - b) @ W + c is (x - (s b + mu)) @ (W / s) + c, and decoding s (a @ D + b) + mu is a @ (s D) + (s b + mu)."""
    s = norm.scale
    b_dec = (s * p.b_dec.astype(np.float64) + norm.mean).astype(np.float32)
    return Params((p.w_enc / s).astype(np.float32), p.b_enc.astype(np.float32), (p.w_dec * s).astype(np.float32), b_dec)


def as_dict(p: Params) -> dict[str, np.ndarray]:
    """The arrays themselves by name (dataclasses.asdict would copy them)."""
    return {f.name: getattr(p, f.name) for f in dataclasses.fields(p)}


def unit_norm_step(grads: Params, w_dec: np.ndarray) -> Params:
    """The gradient without its part along each decoder row (w_dec's rows are unit vectors)."""
    along = np.einsum("md,md->m", grads.w_dec, w_dec)[:, None] * w_dec
    return dataclasses.replace(grads, w_dec=grads.w_dec - along)


def renormalise(w_dec: np.ndarray) -> None:
    w_dec /= np.linalg.norm(w_dec, axis=1, keepdims=True)


@dataclass
class Adam:
    """Adam's moments (as torch.optim.Adam, no weight decay), updated in place with one scratch buffer per
    shape: the SAE's matrices are large and a step's temporaries would cost more than its arithmetic."""
    m: dict[str, np.ndarray]
    v: dict[str, np.ndarray]
    scratch: dict[tuple, np.ndarray]
    t: int = 0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    @classmethod
    def like(cls, params: dict[str, np.ndarray]) -> Adam:
        zeros = {name: np.zeros_like(p) for name, p in params.items()}
        return cls(zeros, {name: np.zeros_like(p) for name, p in params.items()},
                   {p.shape: np.empty_like(p) for p in params.values()})

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> None:
        """p -= lr * m_hat / (sqrt(v_hat) + eps), with the bias-corrected moments."""
        self.t += 1
        c1, c2 = 1 - self.beta1 ** self.t, 1 - self.beta2 ** self.t
        for name, g in grads.items():
            m, v, tmp = self.m[name], self.v[name], self.scratch[g.shape]
            m *= self.beta1
            m += np.multiply(g, 1 - self.beta1, out=tmp)
            v *= self.beta2
            np.multiply(g, g, out=tmp)
            v += np.multiply(tmp, 1 - self.beta2, out=tmp)
            np.sqrt(v, out=tmp)
            tmp *= 1 / math.sqrt(c2)
            tmp += self.eps
            np.divide(m, tmp, out=tmp)
            tmp *= lr / c1
            params[name] -= tmp


def batches(n: int, batch: int, steps: int, rng: np.random.Generator):
    """Row indices of `steps` batches: passes over a fresh permutation of the n rows, sorted within a batch
    (memory-mapped reads in order)."""
    order = np.zeros(0, np.int64)
    for _ in range(steps):
        if len(order) < batch:
            order = np.concatenate([order, rng.permutation(n)])
        yield np.sort(order[:batch])
        order = order[batch:]


def fit(x: np.ndarray, opts: FitOptions, on_progress: Callable[[Progress], None] = lambda p: None
        ) -> tuple[Params, Normalizer]:
    """Train on x [n_tokens, d] (float16 or float32, memory-mapped is fine): the parameters on normalised
    inputs and the normaliser (`fold` them to save)."""
    d = x.shape[1]
    rng = np.random.default_rng(opts.seed)
    row_norms = norms(x)
    norm = normalizer(x, row_norms)
    kept = np.flatnonzero(row_norms <= norm.max_norm)
    n = len(kept)
    params = as_dict(init_params(d, opts.latents, rng))
    adam = Adam.like(params)
    since = np.zeros(opts.latents, np.int64)  # tokens since each latent last fired
    steps = max(1, math.ceil(opts.epochs * n / opts.batch))
    for step, picked in enumerate(batches(n, min(opts.batch, n), steps, rng)):
        rows = kept[picked]
        dead = since >= opts.dead_after
        out = loss_and_grads(Params(**params), norm(np.asarray(x[rows])), opts.k, dead, opts.k_aux or d // 2,
                             opts.aux_coef)
        since += len(rows)
        since[out.sparse.idx[out.sparse.acts > 0]] = 0
        grads = unit_norm_step(out.grads, params["w_dec"])
        adam.step(params, as_dict(grads), schedule(step, opts.lr, min(opts.warmup, steps // 10), steps))
        renormalise(params["w_dec"])
        on_progress(Progress(step + 1, steps, out.loss, out.aux, float(dead.mean())))
    return Params(**params), norm
