"""One optimizer step: forward and backward over micro-batches (gradient accumulation), clip, AdamW.

The rows of a micro-batch are split between the threads. OpenBLAS splits each matrix product between its threads
and waits for the slowest, hundreds of times per layer (attention's products are [64, 64] x [64, <= n_seq] per
head), and NumPy's element-wise steps (softmax, SwiGLU, norms) use one core. With at least as many rows as threads,
each thread instead runs forward and backward of its own rows with a one-thread BLAS, and the threads meet once, to
sum their gradients: every step runs on every core and none waits on another. (SmolLM2 LoRA, 4 x 256 tokens, 2
threads on 2 cores that other work kept busy, load 7-10: 110 s a step with 2 BLAS threads, 19 s with 2 row threads.
On one thread, 8.5 s of CPU; on two row threads, 8.3 s of CPU in all: nothing is spent waiting.)
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..threads import blas_limit, blas_threads_now
from .net import Lora, train_backward, train_forward
from .optim import AdamW, adamw_step, clip_gradients


@dataclass(frozen=True)
class StepResult:
    loss: float  # mean of the micro-batches' losses
    grad_norm: float  # global gradient norm before clipping


def accumulate(params: dict, cfg, micro_batches, trainable, lora: Lora | None, threads: int = 1) -> tuple[float, dict]:
    """The mean loss and mean gradient over micro-batches of (ids, targets, mask): the gradient of the whole batch
    when they are equal-sized, with one micro-batch's activations in memory at a time."""
    total, losses = {}, []
    for ids, targets, mask in micro_batches:
        loss, grads = batch_gradient(params, cfg, np.asarray(ids), np.asarray(targets), np.asarray(mask), trainable,
                                     lora, threads)
        losses.append(loss)
        add_into(total, grads)
    n = len(losses)
    for g in total.values():
        g /= g.dtype.type(n)
    return sum(losses) / n, total


def batch_gradient(params: dict, cfg, ids, targets, mask, trainable, lora: Lora | None,
                   threads: int = 1) -> tuple[float, dict]:
    """The loss of one micro-batch (the mean over its masked positions) and its gradient, its rows shared between
    `threads` threads (see the module's docstring): each part's mean, weighed by its share of the positions."""
    if threads == 1 or len(ids) < threads:
        return row_gradient(params, cfg, ids, targets, mask, trainable, lora)
    count = max(float(mask.sum()), 1.0)

    def part(rows) -> tuple[float, dict]:
        loss, grads = row_gradient(params, cfg, ids[rows], targets[rows], mask[rows], trainable, lora)
        share = float(mask[rows].sum()) / count
        for g in grads.values():
            g *= g.dtype.type(share)  # here, in the part's own thread
        return share * loss, grads

    with blas_limit(1), ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(part, np.array_split(np.arange(len(ids)), threads)))
    total: dict = {}
    for _, grads in results:
        add_into(total, grads)
    return sum(loss for loss, _ in results), total


def row_gradient(params: dict, cfg, ids, targets, mask, trainable, lora: Lora | None) -> tuple[float, dict]:
    loss, tape = train_forward(params, cfg, ids, targets, mask, lora, trainable)
    return loss, train_backward(tape, params, cfg, trainable, lora)


def add_into(total: dict, grads: dict) -> None:
    """total += grads, name by name, reusing the arrays of `grads` (each used once)."""
    for name, g in grads.items():
        if name in total:
            total[name] += g
        else:
            total[name] = g


def train_step(params: dict, cfg, micro_batches, state: dict, opt: AdamW, lr: float, *, trainable,
               lora: Lora | None = None, clip: float | None = 1.0) -> StepResult:
    """Update `params` in place by one AdamW step at learning rate `lr` on the batch split into `micro_batches`."""
    threads = blas_threads_now()
    loss, grads = accumulate(params, cfg, micro_batches, trainable, lora, threads)
    norm = clip_gradients(grads, clip) if clip else float("nan")
    adamw_step(params, grads, state, opt, lr, threads=threads)
    return StepResult(loss, norm)
