"""Activation patching: run the corrupted prompt with one activation taken from the clean run, and measure
how much of the clean behaviour comes back (Meng et al. 2022; Heimersheim & Nanda 2024):

    (LD_patched - LD_corrupt) / (LD_clean - LD_corrupt),  LD = logit(target) - logit(foil) at the last position

0: the activation carries none of the difference; 1: it alone restores the clean answer.
Sites: the stream entering each block (`resid_pre`), each block's attention and MLP output (`attn_out`,
`mlp_out`), each at one position; and each head's output (its `attn.z`, which w_o turns into its share of
attn_out) at every position at once. A site patched at position p leaves positions before p as they were, so
those runs reuse the corrupted run's keys and values and compute only positions p and after (unless the prompt
is longer than a sliding window, whose ring buffer no longer holds the first positions: then they compute all). A site whose clean
and corrupted activations are equal is not run: patching it changes nothing, so its score is exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import InputError
from ..hooks import Hooks, Trace
from ..lm import LanguageModel
from ..model import KVCache
from .attribution import TokenRef
from .common import check_length, token_texts

POSITION_SITES = ("resid_pre", "attn_out", "mlp_out")


@dataclass(frozen=True)
class Patching:
    clean_tokens: list[str]
    corrupt_tokens: list[str]
    target: TokenRef
    foil: TokenRef
    clean_ld: float  # logit(target) - logit(foil) at the last position of the clean prompt
    corrupt_ld: float  # the same for the corrupted prompt
    resid_pre: list[list[float]]  # [layer][position]: fraction of the clean LD restored by patching there
    attn_out: list[list[float]]
    mlp_out: list[list[float]]
    heads: list[list[float]]  # [layer][head]: patching that head's output at every position


def check_same_length(lm: LanguageModel, clean: list[int], corrupt: list[int]) -> None:
    if len(clean) != len(corrupt):
        def shown(ids):
            return "|".join(token_texts(lm, ids))
        raise InputError(f"the prompts must have the same number of tokens, but the clean one has {len(clean)} "
                         f"({shown(clean)}) and the corrupted one {len(corrupt)} ({shown(corrupt)}): "
                         "change words for words of as many tokens")


def replace_row(name: str, position: int, row: np.ndarray) -> Hooks:
    """A hook setting activation `name` at absolute `position` to `row`."""

    def patch(value: np.ndarray, site) -> np.ndarray | None:
        if not site.start <= position < site.start + len(value):
            return None
        value = value.copy()
        value[position - site.start] = row
        return value

    return Hooks([(name, patch)])


def replace_head(name: str, head: int, z: np.ndarray) -> Hooks:
    """A hook setting head `head`'s slice of `name` ([pos, head, d_head]) to z's at every position."""

    def patch(value: np.ndarray, site) -> np.ndarray:
        value = value.copy()
        value[:, head] = z[site.start:site.start + len(value), head]
        return value

    return Hooks([(name, patch)])


def prefix(cache: KVCache, length: int, n_seq: int) -> KVCache:
    """A copy of the cache's first `length` positions, in buffers of n_seq positions (room for the rest): a copy
    even where the cut is the whole buffer, since the run writes its positions into it."""
    def cut(bufs):
        return tuple(b[:, :n_seq].copy() for b in bufs)
    return KVCache(cut(cache.k), cut(cache.v), length)


def prefix_reusable(lm: LanguageModel, n_seq: int) -> bool:
    """Whether the corrupted run's cache still holds every position of an n_seq-token prompt: not when a local
    layer's ring buffer (Gemma 3's sliding window) is shorter, as it then keeps only the latest positions."""
    return not lm.config.local_layers or n_seq <= min(lm.config.sliding_window, lm.config.n_ctx)


class Runner:
    """The corrupted prompt, run again with hooks: the logit difference at its last position."""

    def __init__(self, lm: LanguageModel, ids: list[int], target: int, foil: int, on_progress, total: int):
        self.lm, self.ids, self.target, self.foil = lm, ids, target, foil
        logits, self.cache = lm.forward(ids)
        self.ld = self.difference(logits)
        self.reusable = prefix_reusable(lm, len(ids))
        self.on_progress, self.done, self.total = on_progress, 0, total

    def tick(self) -> None:
        """One site done (run or skipped): tell `on_progress`."""
        self.done += 1
        self.on_progress(self.done, self.total)

    def difference(self, logits: np.ndarray) -> float:
        return float(logits[self.target]) - float(logits[self.foil])

    def run(self, hooks: Hooks, start: int = 0) -> float:
        """LD with `hooks`, recomputing positions from `start` on (those before it are unchanged; all of them
        when the cache cannot give the positions before `start`)."""
        start = start if self.reusable else 0
        cache = prefix(self.cache, start, len(self.ids)) if start else None
        logits, _ = self.lm.forward(self.ids[start:], cache, hooks=hooks)
        return self.difference(logits)


def clean_activations(lm: LanguageModel, ids: list[int]) -> tuple[Trace, np.ndarray]:
    trace = Trace(tuple(f"blocks.*.{site}" for site in POSITION_SITES) + ("blocks.*.attn.z",))
    logits, _ = lm.forward(ids, hooks=trace)
    return trace, logits


def patch_positions(runner: Runner, clean: Trace, corrupt: Trace, site: str, n_layer: int, scale) -> list[list[float]]:
    """[layer][position] scores of patching `site` at one position."""
    grid = []
    for layer in range(n_layer):
        name = f"blocks.{layer}.{site}"
        row = []
        for p in range(len(runner.ids)):
            same = np.array_equal(clean[name][p], corrupt[name][p])
            row.append(0.0 if same else scale(runner.run(replace_row(name, p, clean[name][p]), start=p)))
            runner.tick()
        grid.append(row)
    return grid


def patch_heads(runner: Runner, clean: Trace, corrupt: Trace, n_layer: int, n_head: int, scale) -> list[list[float]]:
    """[layer][head] scores of patching one head's output at every position (from the first where it differs)."""
    grid = []
    for layer in range(n_layer):
        name = f"blocks.{layer}.attn.z"
        row = []
        for h in range(n_head):
            differ = np.flatnonzero((clean[name][:, h] != corrupt[name][:, h]).any(axis=-1))  # positions
            row.append(0.0 if not len(differ) else scale(runner.run(replace_head(name, h, clean[name]),
                                                                    start=int(differ[0]))))
            runner.tick()
        grid.append(row)
    return grid


def patch(lm: LanguageModel, clean_ids: list[int], corrupt_ids: list[int], target: TokenRef,
          foil: TokenRef, on_progress: Callable[[int, int], None] = lambda done, total: None) -> Patching:
    """Activation patching of every site (see the module) from the clean prompt into the corrupted one;
    `on_progress(done, total)` hears after each site (one forward pass each: this takes a while)."""
    check_same_length(lm, clean_ids, corrupt_ids)
    check_length(lm, clean_ids)
    if foil.id == target.id:
        raise InputError(f"the target and the foil are the same token ({target.token!r}): give two different tokens")
    clean, clean_logits = clean_activations(lm, clean_ids)
    corrupt, _ = clean_activations(lm, corrupt_ids)
    cfg = lm.config
    total = cfg.n_layer * (len(POSITION_SITES) * len(corrupt_ids) + cfg.n_head)
    runner = Runner(lm, list(corrupt_ids), target.id, foil.id, on_progress, total)
    clean_ld = runner.difference(clean_logits)
    if clean_ld == runner.ld:
        raise InputError(f"the clean and corrupted prompts give the same logit difference ({clean_ld:.4g}), so there "
                         "is nothing to restore: choose prompts, or a target and foil, that the model tells apart")

    def scale(ld: float) -> float:
        return (ld - runner.ld) / (clean_ld - runner.ld)

    grids = {site: patch_positions(runner, clean, corrupt, site, cfg.n_layer, scale) for site in POSITION_SITES}
    return Patching(clean_tokens=token_texts(lm, clean_ids), corrupt_tokens=token_texts(lm, corrupt_ids),
                    target=target, foil=foil, clean_ld=clean_ld, corrupt_ld=runner.ld, **grids,
                    heads=patch_heads(runner, clean, corrupt, cfg.n_layer, cfg.n_head, scale))
