"""One optimizer step: forward and backward over micro-batches (gradient accumulation), clip, AdamW."""

from __future__ import annotations

from dataclasses import dataclass

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
        loss, tape = train_forward(params, cfg, ids, targets, mask, lora, trainable)
        grads = train_backward(tape, params, cfg, trainable, lora)
        del tape
        losses.append(loss)
        for name, g in grads.items():
            if name in total:
                total[name] += g
            else:
                total[name] = g
    n = len(losses)
    for g in total.values():
        g /= g.dtype.type(n)
    return sum(losses) / n, total


def train_step(params: dict, cfg, micro_batches, state: dict, opt: AdamW, lr: float, *, trainable,
               lora: Lora | None = None, clip: float | None = 1.0) -> StepResult:
    """Update `params` in place by one AdamW step at learning rate `lr` on the batch split into `micro_batches`."""
    loss, grads = accumulate(params, cfg, micro_batches, trainable, lora)
    norm = clip_gradients(grads, clip) if clip else float("nan")
    adamw_step(params, grads, state, opt, lr)
    return StepResult(loss, norm)
