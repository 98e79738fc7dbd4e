"""Choosing the next token from logits: greedy, temperature, top-k and top-p, with a seeded generator."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .nn import softmax

MIN_TEMPERATURE = 1e-6  # smaller positive ones are greedy anyway, and near 1e-308 logits / T overflow: use 0


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0  # 0 means greedy: always the most likely token
    top_k: int | None = None  # keep only the k most likely tokens
    top_p: float | None = None  # keep the smallest set of likely tokens whose probability reaches p

    def __post_init__(self):
        if self.temperature != 0 and not MIN_TEMPERATURE <= self.temperature < math.inf:
            raise InputError(f"temperature must be 0 (greedy) or a finite number from {MIN_TEMPERATURE:g} up, "
                             f"not {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise InputError(f"top-k must be at least 1, not {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:  # False for NaN too
            raise InputError(f"top-p must be in (0, 1], not {self.top_p}")


def greedy(logits: np.ndarray) -> int:
    return int(np.argmax(logits))


def top_k_filter(logits: np.ndarray, k: int) -> np.ndarray:
    """Logits with all but the k largest set to -inf (argpartition: no full sort of the vocabulary)."""
    if k >= logits.shape[-1]:
        return logits
    keep = np.argpartition(logits, -k)[-k:]
    out = np.full_like(logits, -np.inf)
    out[keep] = logits[keep]
    return out


def top_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    """Logits outside the nucleus (the most likely tokens whose probabilities sum to p) set to -inf."""
    order = np.argsort(logits)[::-1]  # most likely first
    probs = softmax(logits[order].astype(np.float64))
    # Keep a token if the probability before it has not yet reached p: the first always stays.
    keep = np.cumsum(probs) - probs < p
    out = np.full_like(logits, -np.inf)
    out[order[keep]] = logits[order[keep]]
    return out


def sample(logits: np.ndarray, params: Sampling, rng: np.random.Generator) -> int:
    """One token id from the next-token logits [n_vocab]."""
    if params.temperature == 0:
        return greedy(logits)
    logits = logits.astype(np.float64) / params.temperature  # 1. sharpen (T < 1) or flatten (T > 1)
    if params.top_k is not None:
        logits = top_k_filter(logits, params.top_k)  # 2. drop the unlikely tail by count
    if params.top_p is not None:
        logits = top_p_filter(logits, params.top_p)  # 3. ... or by cumulative probability
    probs = softmax(logits)  # 4. renormalise what is left
    return int(rng.choice(len(probs), p=probs))  # 5. draw with the seeded generator
