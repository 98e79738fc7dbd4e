"""Causal self-attention with a KV cache, full or over a sliding window of recent positions.

Global layers keep every position's keys and values in a buffer of the whole context; local layers
(Gemma 3's sliding-window layers) keep only the last `window` positions, in a ring buffer: slot
p % window holds position p. A pass attends to the keys it needs, gathered in order of position,
so patterns and masks are the same either way; hooks always see patterns over absolute positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .causal import weighted
from .hooks import NO_POINTS
from .memory import lazy_zeros
from .nn import LOG2E, apply_rope, linear, rms_norm, rope_tables

if TYPE_CHECKING:
    from .model import Block, Config, Linear


@dataclass(frozen=True)
class KVCache:
    """Keys and values of the positions seen so far, in buffers allocated once.

    A forward pass writes positions [length, length + n) and returns a cache with the new length. In a
    model without local layers the old value still describes its own prefix, so a prefix can be reused;
    a local layer's ring buffer keeps only the latest window, so there only the newest cache is valid.
    """

    k: tuple[np.ndarray, ...]  # per layer [n_kv_head, n_ctx, d_head] (local layers: [n_kv_head, window, d_head])
    v: tuple[np.ndarray, ...]
    length: int = 0
    rows: RowCaches | None = None  # the batch's buffers, when k and v are views of its slot `slot`
    slot: int = 0

    @classmethod
    def empty(cls, cfg: Config, dtype=np.float32) -> KVCache:
        return cls(tuple(lazy_zeros(buffer_shape(cfg, i), dtype) for i in range(cfg.n_layer)),
                   tuple(lazy_zeros(buffer_shape(cfg, i), dtype) for i in range(cfg.n_layer)))


@dataclass(frozen=True, eq=False)
class RowCaches:
    """The caches of a batch's sequences in one buffer per layer, a slot per sequence, so that the batched
    decode step (engine/batched.py) attends for all of them in one product. `cache(slot)` is a KVCache like any
    other (its buffers are views of the slot), which `forward` fills and reads as usual."""

    k: tuple[np.ndarray, ...]  # per layer [slots, n_kv_head, n_ctx (local layers: window), d_head]
    v: tuple[np.ndarray, ...]

    @classmethod
    def empty(cls, cfg: Config, slots: int, dtype=np.float32) -> RowCaches:
        return cls(tuple(lazy_zeros((slots, *buffer_shape(cfg, i)), dtype) for i in range(cfg.n_layer)),
                   tuple(lazy_zeros((slots, *buffer_shape(cfg, i)), dtype) for i in range(cfg.n_layer)))

    def cache(self, slot: int) -> KVCache:
        """Slot `slot` as an empty cache."""
        return KVCache(tuple(k[slot] for k in self.k), tuple(v[slot] for v in self.v), 0, self, slot)


def buffer_shape(cfg: Config, layer: int) -> tuple[int, int, int]:
    """One sequence's key (or value) buffer of a layer: [n_kv_head, n_ctx or the window, d_head]."""
    rows = min(cfg.n_ctx, cfg.sliding_window) if layer in cfg.local_layers else cfg.n_ctx
    return cfg.n_kv_head, rows, cfg.d_head


def heads(hook, name: str, x: np.ndarray) -> np.ndarray:
    """Hook point for per-head values kept [head, n_seq, d_head]: hooks see TransformerLens' [pos, head, d_head]."""
    return hook(name, x.transpose(1, 0, 2)).transpose(1, 0, 2)


def qkv(x: np.ndarray, blk: Block, cfg: Config, rope, hook) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Queries [n_head, n_seq, d_head], keys and values [n_kv_head, n_seq, d_head] of the new positions."""
    return heads_of(linear(x, blk.w_qkv), blk, cfg, rope, hook)  # [n_seq, n_embd] -> [n_seq, n_q + 2 * n_kv]


def heads_of(fused: np.ndarray, blk: Block, cfg: Config, rope, hook) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fused projection [n_seq, n_q + 2 * n_kv] as query, key and value heads, normalized and rotated
    where the model does (engine/batched.py computes the projection its own way, then calls this)."""
    n_q, n_kv = cfg.n_head * cfg.d_head, cfg.n_kv_head * cfg.d_head
    q = rotated(fused[:, :n_q], blk.q_norm, cfg, rope)
    k = rotated(fused[:, n_q:n_q + n_kv], blk.k_norm, cfg, rope)
    v = as_heads(fused[:, n_q + n_kv:], cfg)
    return heads(hook, "attn.q", q), heads(hook, "attn.k", k), heads(hook, "attn.v", v)


def as_heads(part: np.ndarray, cfg: Config) -> np.ndarray:
    """Columns of heads [n_seq, heads * d_head] as [heads, n_seq, d_head] (a view)."""
    return part.reshape(part.shape[0], -1, cfg.d_head).transpose(1, 0, 2)


def rotated(part: np.ndarray, norm, cfg: Config, rope) -> np.ndarray:
    """Query or key heads [n_seq, heads * d_head] -> [heads, n_seq, d_head], each RMS-normalized by `norm` where
    the model does (Gemma 3's q_norm, k_norm) and rotated by its position's angles (rotary models). A run of
    heads gives its own part of the whole: engine/lanes.py computes a few heads at a time."""
    x = as_heads(part, cfg)
    if cfg.qk_norm:
        x = rms_norm(x, norm.g, cfg.norm_eps)
    return apply_rope(x, *rope) if rope is not None else x


def rotary_tables(cfg: Config, start: int, end: int, dtype):
    """cos and sin of the new positions' rotary angles for the global and for the local layers, shared by
    every block of each kind; (None, None) with learned positions."""
    if cfg.positions != "rotary":
        return None, None
    positions = np.arange(start, end)
    rope = rope_tables(positions, cfg.d_head, cfg.rope_theta, dtype)
    if not cfg.local_layers or cfg.rope_local_theta in (None, cfg.rope_theta):
        return rope, rope
    return rope, rope_tables(positions, cfg.d_head, cfg.rope_local_theta, dtype)


def attention(x, blk: Block, cfg: Config, k_buf, v_buf, start: int, rope, hook, window: int | None) -> np.ndarray:
    """Causal multi-head attention over the cached positions and the new ones (the last `window` of them
    on a local layer): [n_seq, n_embd] -> [n_seq, n_embd]."""
    q, k, v = qkv(x, blk, cfg, rope, hook)
    z = attend(q, k, v, cfg, k_buf, v_buf, start, hook, window)
    return attention_output(z, blk.w_o, cfg, hook)


# A long pass's attention goes by blocks of up to BLOCK queries (see attend), fewer as the keys grow so that a
# block's scores [n_head, queries, keys] stay within SCORES_BUDGET numbers (16 MB in float32), never under MIN_BLOCK.
BLOCK, MIN_BLOCK, SCORES_BUDGET = 128, 16, 1 << 22


def block_size(cfg: Config, n_keys: int) -> int:
    """Queries per block of a pass that sees `n_keys` keys."""
    return max(MIN_BLOCK, min(BLOCK, SCORES_BUDGET // (cfg.n_head * n_keys)))


def attend(q, k, v, cfg: Config, k_buf, v_buf, start: int, hook, window: int | None) -> np.ndarray:
    """One sequence's new queries against its cache and new keys: each head's weighted values
    [n_seq, n_head, d_head]. Query heads sharing a key/value head are batched. A long pass attends in blocks
    of queries (block_size), each to the keys up to its own end, so that the scores the causal mask would
    hide past a block are never computed (unless a hook wants the whole pattern). The batched decode step
    (engine/batched.py) calls it once per sequence for caches of their own."""
    keys, values, first = remember(k_buf, v_buf, k, v, start, window,  # [n_kv_head, n_keys, d_head]
                                   in_order=hook.wants("attn.pattern"))
    size = block_size(cfg, keys.shape[1])
    if hook.wants("attn.pattern") or q.shape[1] <= size:
        z = weighted_values(q, keys, values, cfg, start, first, window, hook)
    else:
        z = np.concatenate([block_values(q[:, lo:lo + size], keys, values, cfg, start + lo, first, window)
                            for lo in range(0, q.shape[1], size)], axis=1)
    return hook("attn.z", z.transpose(1, 0, 2))  # [n_seq, n_head, d_head]


def block_values(q, keys, values, cfg: Config, start: int, first: int, window: int | None) -> np.ndarray:
    """weighted_values for a block of queries (positions start..), given only the keys it may see: from the
    first of its window (or of the cache) to its own end."""
    end = start + q.shape[1]
    lo = first if window is None else max(first, start - window + 1)
    return weighted_values(q, keys[:, lo - first:end - first], values[:, lo - first:end - first], cfg, start, lo,
                           window, NO_POINTS)


def weighted_values(q, keys, values, cfg: Config, start: int, first: int, window: int | None, hook) -> np.ndarray:
    """Queries of positions start.. [n_head, n_seq, d_head] against the keys and values of positions
    first..start + n_seq - 1 [n_kv_head, n_keys, d_head]: each head's weighted values [n_head, n_seq, d_head].
    The head counts come from the arrays: any key heads with the query heads that share them will do.

    The softmax is normalized after the product with the values: dividing the weighted values [.., d_head] by
    the rows' sums is the same as dividing the scores [.., n_keys] first, in fewer operations (the scores are
    the largest arrays of a long pass). A hook on the pattern sees it normalized; unless the hook replaces it,
    the pass goes on as it does without hooks, to the bit."""
    (n_head, n_seq, d_head), (n_kv_head, n_keys) = q.shape, keys.shape[:2]
    group = n_head // n_kv_head  # query heads per key head
    q = q.reshape(n_kv_head, group * n_seq, d_head)  # a group's queries are rows of one product
    # scores in powers of 2 (nn.LOG2E: softmax of s is 2**(s * LOG2E) normalized), scaled through q: fewer numbers
    q = q * q.dtype.type(LOG2E / np.sqrt(cfg.query_pre_attn_scalar or cfg.d_head))
    weights, sums, z = weighted(q, keys, values, n_seq, start, first, window)  # [n_kv_head, group * n_seq, ...]
    if hook.wants("attn.pattern"):
        pattern = (weights / sums).reshape(n_head, n_seq, n_keys)  # [head, dest, src]
        hooked = pattern_hook(hook, pattern, first)
        if hooked is not pattern:  # replaced by a hook (which may not change it in place: hooks.py)
            z = hooked.reshape(n_kv_head, group * n_seq, n_keys) @ values
            return z.reshape(n_head, n_seq, d_head)
    z /= sums
    return z.reshape(n_head, n_seq, d_head)  # as heads


def remember(k_buf, v_buf, k, v, start: int, window: int | None, in_order: bool = True):
    """Write the new keys and values into the layer's buffers; return the keys and values the new
    positions attend to ([n_kv_head, n_keys, d_head], in order of position) and the first one's position.

    One new token on a local layer needs no copy: until the ring wraps its slots are in order, and after,
    it holds exactly the window the token sees, in ring order, which attention does not depend on (no mask
    for one token; softmax and the weighted sum are over a set). Only a hook on the pattern needs the order."""
    end, size = start + k.shape[1], k_buf.shape[1]
    if window is None:  # the buffer holds every position
        k_buf[:, start:end], v_buf[:, start:end] = k, v
        return k_buf[:, :end], v_buf[:, :end], 0
    if end - start == 1 and size == window and (start < size or not in_order):
        ring_write(k_buf, k, start)
        ring_write(v_buf, v, start)
        return (k_buf[:, :end], v_buf[:, :end], 0) if start < size else (k_buf, v_buf, end - size)
    first = max(0, start - window + 1)  # the oldest position the first new one may see
    keys = np.concatenate([ring_read(k_buf, first, start), k], axis=1)
    values = np.concatenate([ring_read(v_buf, first, start), v], axis=1)
    ring_write(k_buf, k, start)
    ring_write(v_buf, v, start)
    return keys, values, first


def ring_read(buf: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Positions [lo, hi) of a ring buffer [n_kv_head, size, d_head] (hi - lo <= size), in order."""
    return buf[:, np.arange(lo, hi) % buf.shape[1]]


def ring_write(buf: np.ndarray, new: np.ndarray, start: int) -> None:
    """Positions [start, start + n) into the ring buffer; of more than it holds, only the latest."""
    end, size = start + new.shape[1], buf.shape[1]
    positions = np.arange(max(start, end - size), end)
    buf[:, positions % size] = new[:, positions - start]


def pattern_hook(hook, pattern: np.ndarray, first: int) -> np.ndarray:
    """The `attn.pattern` hook point over absolute key positions [n_head, n_seq, end], even when a local
    layer attended only to positions first..end-1 (the columns before are zeros)."""
    if first == 0:
        return hook("attn.pattern", pattern)
    if not hook.wants("attn.pattern"):
        return pattern
    full = np.zeros((*pattern.shape[:2], first + pattern.shape[2]), pattern.dtype)
    full[..., first:] = pattern
    hooked = hook("attn.pattern", full)
    return pattern if hooked is full else hooked[..., first:]


def attention_output(z: np.ndarray, w_o: Linear, cfg: Config, hook) -> np.ndarray:
    """The heads' values through w_o: [n_seq, n_head, d_head] -> [n_seq, n_embd].

    Only when a hook wants them are the heads' shares kept apart (`attn.result`), then summed: that costs
    n_head times the memory of the output, so the plain pass does one matrix product instead.
    """
    n_seq = z.shape[0]
    if not hook.wants("attn.result"):
        return linear(z.reshape(n_seq, cfg.n_head * cfg.d_head), w_o)  # [n_seq, n_embd]
    w = w_o.w.reshape(cfg.n_embd, cfg.n_head, cfg.d_head)  # [n_embd, n_head, d_head]
    result = hook("attn.result", np.einsum("shd,ehd->she", z, w))  # [n_seq, n_head, n_embd]
    out = result.sum(axis=1)
    if w_o.b is not None:
        out += w_o.b
    return out
