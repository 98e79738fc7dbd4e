"""How good a trained SAE is, on held-out text, and the scan of the training tokens behind the index.

On held-out windows (positions skip.., as in training):
- fve: fraction of variance explained, 1 - sum ||x - x_hat||^2 / sum ||x - mean||^2
- l0: mean number of active latents per token
- ce_clean, ce_sae, ce_zero: next-token cross-entropy (nats) of the model as it is, with the SAE's
  reconstruction spliced in at the hook (a replace hook on blocks.L.resid_post), and with the hook
  zero-ablated; both only at positions skip.. and not at the other attention sinks (rows with a norm over
  the training's max_norm, see fit.normalizer), which the SAE was not trained on; the predictions counted
  are those of positions skip.. . ce_recovered = (ce_zero - ce_sae) /
  (ce_zero - ce_clean).
dead (the fraction of latents that never fire) comes from the scan of every training token (the index).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ...hooks import Hooks
from ...lm import LanguageModel
from ...nn import log_softmax
from ..index import Firings
from .stack import logits_from, prefix
from .topk import Params, encode, reconstruct

CHUNK = 4096  # training tokens encoded at once in the scan


@dataclass(frozen=True)
class Metrics:
    fve: float
    l0: float
    dead: float
    ce_recovered: float
    ce_clean: float
    ce_sae: float
    ce_zero: float
    latents: int
    k: int
    tokens: int  # training tokens

    def as_dict(self) -> dict:
        return {"fve": self.fve, "l0": self.l0, "dead": self.dead, "ce_recovered": self.ce_recovered,
                "ce_clean": self.ce_clean, "ce_sae": self.ce_sae, "ce_zero": self.ce_zero,
                "latents": self.latents, "k": self.k, "tokens": self.tokens}


def scan(p: Params, k: int, x: np.ndarray, max_norm: float,
         on_progress: Callable[[int, int], None] = lambda d, t: None) -> tuple[Firings, int]:
    """Every nonzero activation of the SAE (on raw inputs) over the rows of x [n, d] with a norm of at most
    max_norm (the others are attention sinks, see fit.normalizer), CHUNK rows at a time; and how many
    rows were scanned."""
    tokens, latents, acts, scanned = [], [], [], 0
    for lo in range(0, len(x), CHUNK):
        part = np.asarray(x[lo:lo + CHUNK], np.float32)
        rows = np.flatnonzero(np.linalg.norm(part, axis=1) <= max_norm)
        s = encode(p, part[rows], k)
        row, slot = np.nonzero(s.acts > 0)
        scanned += len(rows)
        tokens.append(lo + rows[row])
        latents.append(s.idx[row, slot])
        acts.append(s.acts[row, slot])
        on_progress(min(lo + CHUNK, len(x)), len(x))
    return Firings(np.concatenate(tokens).astype(np.int64), np.concatenate(latents).astype(np.int64),
                   np.concatenate(acts).astype(np.float32)), scanned


def splice(name: str, rows: np.ndarray, fn) -> Hooks:
    """A hook replacing `name`'s rows `rows` by fn(those rows)."""
    def replace(value: np.ndarray, site) -> np.ndarray:
        out = value.copy()
        out[rows] = fn(value[rows])
        return out

    return Hooks([(name, replace)])


def record(name: str, skip: int, into: dict) -> Hooks:
    """A hook keeping a copy of `name`'s rows skip.. in into["x"] (the value itself goes on unchanged)."""
    def keep(value: np.ndarray, site) -> None:
        into["x"] = value[skip:].copy()

    return Hooks([(name, keep)])


def cross_entropy(logits: np.ndarray, ids: np.ndarray, skip: int) -> tuple[float, int]:
    """Summed next-token cross-entropy of the predictions at positions skip..n-2, and their count."""
    logp = log_softmax(logits[skip:-1].astype(np.float64))  # [n - 1 - skip, n_vocab]
    targets = ids[skip + 1:]
    return float(-logp[np.arange(len(targets)), targets].sum()), len(targets)


def window_sums(lm: LanguageModel, p: Params, k: int, layer: int, ids: np.ndarray, skip: int,
                max_norm: float) -> np.ndarray:
    """One held-out window's sums, packed in one vector to add up over windows:
    [sse, sum of x (d values), sum of ||x||^2, active latents, rows, ce_clean, ce_sae, ce_zero (summed), n_pred]."""
    name = f"blocks.{layer}.resid_post"
    start = prefix(lm, ids, layer)
    seen = {}
    clean = logits_from(lm, start, layer, record(name, skip, seen))
    rows = skip + np.flatnonzero(np.linalg.norm(seen["x"], axis=1) <= max_norm)  # not the attention sinks
    x = seen["x"][rows - skip]
    x_hat = reconstruct(p, x, k)
    active = float((encode(p, x, k).acts > 0).sum())
    sae = logits_from(lm, start, layer, splice(name, rows, lambda r: reconstruct(p, r, k)))
    zero = logits_from(lm, start, layer, splice(name, rows, np.zeros_like))
    (ce_clean, n), (ce_sae, _), (ce_zero, _) = (cross_entropy(z, ids, skip) for z in (clean, sae, zero))
    sse = float(((x.astype(np.float64) - x_hat) ** 2).sum())
    return np.r_[sse, x.astype(np.float64).sum(axis=0), float((x.astype(np.float64) ** 2).sum()), active, len(x),
                 ce_clean, ce_sae, ce_zero, n]


def evaluate(lm: LanguageModel, p: Params, k: int, layer: int, windows: np.ndarray, skip: int, max_norm: float,
             dead: float, tokens: int, on_progress: Callable[[int, int], None] = lambda d, t: None) -> Metrics:
    """The metrics of the SAE `p` (on raw inputs) over the held-out `windows` [n, window]."""
    total = None
    for i, ids in enumerate(windows):
        sums = window_sums(lm, p, k, layer, ids, skip, max_norm)
        total = sums if total is None else total + sums
        on_progress(i + 1, len(windows))
    d = p.w_enc.shape[0]
    sse, x_sum, x_sq, active, rows = total[0], total[1:1 + d], total[1 + d], total[2 + d], total[3 + d]
    ce_clean, ce_sae, ce_zero, n_pred = total[4 + d:8 + d]
    sst = x_sq - float(x_sum @ x_sum) / rows
    ce = [ce_clean / n_pred, ce_sae / n_pred, ce_zero / n_pred]
    return Metrics(float(1 - sse / sst), float(active / rows), dead, float((ce[2] - ce[1]) / (ce[2] - ce[0])),
                   *map(float, ce), latents=p.w_enc.shape[1], k=k, tokens=tokens)
