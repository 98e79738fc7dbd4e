"""AdamW with decoupled weight decay, a warm-up then cosine learning rate, and global-norm gradient clipping."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AdamW:
    lr: float = 1e-4  # peak learning rate (see `schedule`)
    beta1: float = 0.9  # decay of the running mean of gradients
    beta2: float = 0.999  # decay of the running mean of squared gradients
    eps: float = 1e-8  # added to the root of the second moment, so a zero gradient divides by eps, not 0
    weight_decay: float = 0.0  # shrinks matrices (ndim >= 2) towards 0 by lr * weight_decay each step


def adamw_state(params: dict[str, np.ndarray], names) -> dict:
    """Zeroed first and second moments for the parameters `names`, and the step count."""
    return {"step": 0, "m": {n: np.zeros_like(params[n]) for n in names}, "v": {n: np.zeros_like(params[n]) for n in names}}


def adamw_step(params: dict, grads: dict, state: dict, opt: AdamW, lr: float, *, threads: int = 1) -> None:
    """One AdamW update of `params` in place (as torch.optim.AdamW): decay first, decoupled from the gradient,
    then p -= lr * m_hat / (sqrt(v_hat) + eps) with the bias-corrected moments. The parameters are independent, and
    NumPy lets go of Python's lock in each element-wise pass: `threads` threads update them side by side."""
    state["step"] += 1
    t = state["step"]
    c1, c2 = 1 - opt.beta1 ** t, 1 - opt.beta2 ** t

    def update(name: str) -> None:
        adamw_update(params[name], grads[name], state["m"][name], state["v"][name], opt, lr, c1, c2)

    if threads == 1:
        for name in grads:
            update(name)
        return
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(update, sorted(grads, key=lambda n: -grads[n].size)))  # the largest first: even finishes


def adamw_update(p, g, m, v, opt: AdamW, lr: float, c1: float, c2: float) -> None:
    """One parameter's update, with c1, c2 the bias corrections 1 - beta^t."""
    c, tmp = p.dtype.type, np.empty_like(p)  # one scratch array: no temporaries the size of p beyond it
    if opt.weight_decay and p.ndim >= 2:
        p *= c(1 - lr * opt.weight_decay)
    m *= c(opt.beta1)
    m += np.multiply(g, c(1 - opt.beta1), out=tmp)
    v *= c(opt.beta2)
    np.multiply(g, g, out=tmp)
    v += np.multiply(tmp, c(1 - opt.beta2), out=tmp)
    np.sqrt(v, out=tmp)
    tmp /= c(math.sqrt(c2))
    tmp += c(opt.eps)  # the denominator sqrt(v_hat) + eps
    np.divide(m, tmp, out=tmp)
    p -= np.multiply(tmp, c(lr / c1), out=tmp)


def schedule(step: int, lr: float, warmup: int, total: int, min_fraction: float = 0.1) -> float:
    """The learning rate of step `step` (0-based): linear warm-up over `warmup` steps to `lr`, then a cosine
    from `lr` down to min_fraction * lr at the last of `total` steps."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup - 1, 1)  # 0 at the end of warm-up, 1 at the last step
    return lr * (min_fraction + (1 - min_fraction) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def clip_gradients(grads: dict, max_norm: float) -> float:
    """Scale all gradients together so their global L2 norm is at most max_norm (as torch's clip_grad_norm_);
    returns the norm before clipping."""
    total = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))  # vdot: a BLAS dot, no squared copy
    factor = max_norm / (total + 1e-6)
    if factor < 1:
        for g in grads.values():
            g *= g.dtype.type(factor)
    return total
