"""One optimizer step: forward and backward over micro-batches (gradient accumulation), clip, AdamW.

The rows of a micro-batch are split between the cores. OpenBLAS splits each matrix product between its threads and
waits for the slowest, hundreds of times per layer (attention's products are [64, 64] x [64, <= n_seq] per head);
NumPy's element-wise steps (softmax, SwiGLU, norms) use one core. With at least as many rows as BLAS threads, each
thread instead runs forward and backward of its own rows with a one-thread BLAS, and the threads meet once, to sum
their gradients: every step runs on every core, and none waits on another. (SmolLM2 LoRA, 4 x 256 tokens, 2 cores
shared with other work: 75 s a step with 2 BLAS threads, 9.8 s with 2 row threads; 1 thread alone: 10.5 s.)
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .net import Lora, train_backward, train_forward
from .optim import AdamW, adamw_step, clip_gradients


@dataclass(frozen=True)
class StepResult:
    loss: float  # mean of the micro-batches' losses
    grad_norm: float  # global gradient norm before clipping


def accumulate(params: dict, cfg, micro_batches, trainable, lora: Lora | None) -> tuple[float, dict]:
    """The mean loss and mean gradient over micro-batches of (ids, targets, mask): the gradient of the whole batch
    when they are equal-sized, with one micro-batch's activations in memory at a time."""
    total, losses = {}, []
    for ids, targets, mask in micro_batches:
        loss, grads = batch_gradient(params, cfg, np.asarray(ids), np.asarray(targets), np.asarray(mask), trainable,
                                     lora)
        losses.append(loss)
        add_into(total, grads, 1.0)
    n = len(losses)
    for g in total.values():
        g /= g.dtype.type(n)
    return sum(losses) / n, total


def batch_gradient(params: dict, cfg, ids, targets, mask, trainable, lora: Lora | None) -> tuple[float, dict]:
    """The loss of one micro-batch (the mean over its masked positions) and its gradient, its rows shared between
    the BLAS's threads (see the module's docstring): each part's mean, weighed by its share of the positions."""
    from threadpoolctl import ThreadpoolController

    blas = ThreadpoolController().select(user_api="blas")
    threads = max([lib["num_threads"] for lib in blas.info()] or [1])
    if threads == 1 or len(ids) < threads:
        return row_gradient(params, cfg, ids, targets, mask, trainable, lora)
    parts = np.array_split(np.arange(len(ids)), threads)
    with blas.limit(limits=1), ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda rows: row_gradient(params, cfg, ids[rows], targets[rows], mask[rows],
                                                          trainable, lora), parts))
    count = max(float(mask.sum()), 1.0)
    shares = [float(mask[rows].sum()) / count for rows in parts]
    total: dict = {}
    for share, (_, grads) in zip(shares, results):
        add_into(total, grads, share)
    return sum(share * loss for share, (loss, _) in zip(shares, results)), total


def row_gradient(params: dict, cfg, ids, targets, mask, trainable, lora: Lora | None) -> tuple[float, dict]:
    loss, tape = train_forward(params, cfg, ids, targets, mask, lora, trainable)
    return loss, train_backward(tape, params, cfg, trainable, lora)


def add_into(total: dict, grads: dict, share: float) -> None:
    """total += share * grads, name by name, reusing the arrays of `grads` (each used once)."""
    for name, g in grads.items():
        if share != 1.0:
            g *= g.dtype.type(share)
        if name in total:
            total[name] += g
        else:
            total[name] = g


def train_step(params: dict, cfg, micro_batches, state: dict, opt: AdamW, lr: float, *, trainable,
               lora: Lora | None = None, clip: float | None = 1.0) -> StepResult:
    """Update `params` in place by one AdamW step at learning rate `lr` on the batch split into `micro_batches`."""
    loss, grads = accumulate(params, cfg, micro_batches, trainable, lora)
    norm = clip_gradients(grads, clip) if clip else float("nan")
    adamw_step(params, grads, state, opt, lr)
    return StepResult(loss, norm)
