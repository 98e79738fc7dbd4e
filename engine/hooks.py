"""Hooks: read or replace named activations during a forward pass, with TransformerLens' names.

    hooks = Hooks().add("blocks.3.attn_out", lambda value, site: value * 0)   # ablate block 3's attention
    logits, _ = model.forward(ids, hooks=hooks)

A hook is `fn(value, site) -> array | None`: `site` says where it runs (`site.name`, `site.layer`,
`site.start`: the absolute position of `value`'s first row, which is not 0 during cached decoding).
Returning an array (of `value`'s shape) replaces the activation; returning None keeps it. Hooks must not
change `value` in place: return a new array. Patterns are globs (`blocks.*.attn.pattern`); several
hooks on one name run in the order they were added, each seeing the value the one before returned.

Names, with their shapes for a pass over n_seq new positions (rows are positions):
    embed, pos_embed                           [n_seq, n_embd]   (pos_embed only with learned positions)
    blocks.{L}.resid_pre                       [n_seq, n_embd]   the stream entering block L
    blocks.{L}.attn.q                          [n_seq, n_head, d_head]     (after the rotary rotation)
    blocks.{L}.attn.k, .attn.v                 [n_seq, n_kv_head, d_head]
    blocks.{L}.attn.pattern                    [n_head, n_seq, n_seen]     n_seen = start + n_seq (a local
                                               layer's zeros outside its sliding window included)
    blocks.{L}.attn.z                          [n_seq, n_head, d_head]     each head's weighted values
    blocks.{L}.attn.result                     [n_seq, n_head, n_embd]     each head's share of attn_out;
                                               computed only when a hook asks for it
    blocks.{L}.ln1_post.in                     [n_seq, n_embd]   models with sandwich norms (Gemma): attention's
                                               output before its post-norm; attn_out is after it
    blocks.{L}.attn_out, resid_mid             [n_seq, n_embd]
    blocks.{L}.mlp.pre                         [n_seq, n_ff]     before the activation (SwiGLU: the gate)
    blocks.{L}.mlp.pre_linear                  [n_seq, n_ff]     SwiGLU only: the "up" half
    blocks.{L}.mlp.post                        [n_seq, n_ff]     after the activation (SwiGLU: gate * up)
    blocks.{L}.ln2_post.in                     [n_seq, n_embd]   sandwich norms: the MLP's output before its post-norm
    blocks.{L}.mlp_out, resid_post             [n_seq, n_embd]
    ln_final                                   [n_seq, n_embd]   the normalized stream (only the last row
                                               unless the pass asks for all logits)
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable

import numpy as np

HookFn = Callable[[np.ndarray, "Site"], "np.ndarray | None"]


@dataclass(frozen=True)
class Site:
    name: str  # the activation's full name, e.g. "blocks.3.attn.pattern"
    layer: int | None  # the block it belongs to; None for embed, pos_embed and ln_final
    start: int  # absolute position of the value's first row (the cache's length before this pass)


@lru_cache(maxsize=4096)
def matching(patterns: tuple[str, ...], name: str) -> tuple[int, ...]:
    """Indices of the patterns that match `name` (cached: a generation asks the same names every token)."""
    return tuple(i for i, pattern in enumerate(patterns) if fnmatch.fnmatchcase(name, pattern))


class Hooks:
    """An immutable, ordered collection of (pattern, fn); `add` and `+` return new collections."""

    def __init__(self, entries: Iterable[tuple[str, HookFn]] = ()):
        self._entries = tuple((str(pattern), fn) for pattern, fn in entries)
        self._patterns = tuple(pattern for pattern, _ in self._entries)

    @property
    def entries(self) -> tuple[tuple[str, HookFn], ...]:
        return self._entries

    def add(self, pattern: str, fn: HookFn) -> Hooks:
        return Hooks(self._entries + ((pattern, fn),))

    def __add__(self, other: Hooks) -> Hooks:
        return Hooks(self._entries + other.entries)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(repr(p) for p in self._patterns)})"

    def wants(self, name: str) -> bool:
        return bool(matching(self._patterns, name))

    def run(self, value: np.ndarray, site: Site) -> np.ndarray:
        """The value after every hook on `site.name` has seen it, in order."""
        for i in matching(self._patterns, site.name):
            new = self._entries[i][1](value, site)
            if new is not None:
                value = checked(new, value, site)
        return value


def checked(new, old: np.ndarray, site: Site) -> np.ndarray:
    """A hook's replacement as an array of the activation's dtype; a wrong shape is the hook's error, said here."""
    new = np.asarray(new, dtype=old.dtype)
    if new.shape != old.shape:
        raise ValueError(f"the hook on {site.name} returned shape {new.shape}, not {old.shape}: "
                         "return an array of the activation's shape, or None to keep it")
    return new


class Trace(Hooks):
    """Hooks that record copies of the activations whose names match `names` (glob patterns).

    `trace[name]` and `trace.acts` hold the last value recorded under each name, in the pass's dtype.
    """

    def __init__(self, names: Iterable[str] = ("*",)):
        self.names = tuple(names)
        self.acts: dict[str, np.ndarray] = {}
        super().__init__((pattern, self.record) for pattern in self.names)

    def record(self, value: np.ndarray, site: Site) -> None:
        self.acts[site.name] = np.array(value, copy=True)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.acts[name]


def add_at_positions(name: str, delta: np.ndarray) -> Hooks:
    """A hook adding delta[p] to activation `name` at absolute position p, for the positions both cover.

    delta: [n_pos, ...] matching the activation's rows; used for steering (ActAdd) on `blocks.L.resid_pre`.
    """

    def add(value: np.ndarray, site: Site) -> np.ndarray | None:
        overlap = min(site.start + len(value), len(delta)) - site.start
        if overlap <= 0:
            return None
        value = value.copy()
        value[:overlap] += delta[site.start:site.start + overlap]
        return value

    return Hooks([(name, add)])


class Points:
    """The hook points of one pass through one block (or outside the blocks): `points(name, value)`."""

    __slots__ = ("hooks", "prefix", "layer", "start")

    def __init__(self, hooks: Hooks, prefix: str, layer: int | None, start: int):
        self.hooks, self.prefix, self.layer, self.start = hooks, prefix, layer, start

    def __call__(self, name: str, value: np.ndarray) -> np.ndarray:
        full = self.prefix + name
        if not self.hooks.wants(full):
            return value
        return self.hooks.run(value, Site(full, self.layer, self.start))

    def wants(self, name: str) -> bool:
        return self.hooks.wants(self.prefix + name)


class NoPoints:
    """The hook points of a pass with no hooks: every value goes through unchanged."""

    __slots__ = ()

    def __call__(self, name: str, value: np.ndarray) -> np.ndarray:
        return value

    def wants(self, name: str) -> bool:
        return False


NO_POINTS = NoPoints()


def points(hooks: Hooks | None, layer: int | None, start: int) -> Points | NoPoints:
    if hooks is None or not hooks.entries:
        return NO_POINTS
    return Points(hooks, "" if layer is None else f"blocks.{layer}.", layer, start)
