"""A long pass's blocks shared between threads ("lanes"), each with a one-thread BLAS.

OpenBLAS splits each matrix product between its threads, but NumPy runs everything else of a pass on one core:
norms, rotations, the softmax's passes over the scores, the MLP's activation. In a 512-token SmolLM2 pass that
is about 30% of the time, with the other core idle. Here each of n lanes (threads; model.one_pass runs 2) takes its
share of every step of a block, as tensor-parallel training splits a model between devices:

    step                       a lane's share
    queries, keys, values      its query heads and key/value heads (runs of the fused projection's rows), rotated
                               and written to the cache (a sliding-window layer's ring buffer too)
    attention                  (key heads, block of queries) pairs, taken one at a time from the layer's queue,
                               largest first, as the lane comes free
    output projection          its rows (positions): every head's values times w_o, added to the residual stream
    + norm before the MLP      (with Gemma's post-norms, normalized first), then normalized
    MLP in and activation      its features of the hidden layer (gate and up alike; kept by feature, as model.mlp)
    MLP out                    its rows: every feature times w_out, added as the output projection's, then
    + next norm                normalized by the next block's norm before attention (the first block's: at the start)

and the lanes wait for each other between steps (a threading.Barrier, 5 times per block, ~50 us each): a step
by rows and the norm after it need no meeting between them. Every number is computed by the functions the plain
pass uses, on slices: a product's output rows from a slice of its input's rows, or its output columns from a slice
of the weight's rows, are the same sums, and element-wise steps do not depend on their neighbours. SmolLM2's, GPT-2
small's and Gemma 3 270M's residual streams after 512 tokens came out bit-identical to the plain pass's with a
one-thread BLAS (SmolLM2's logits after 4,096 too); OpenBLAS may still sum a slice in another order (other kernels
for small matrices, long products split otherwise with more threads), within float32 rounding, which is what
tests/test_lanes.py checks.

model.one_pass uses 2 lanes (`count`) for passes of at least MIN_ROWS positions without hooks (which see whole
activations), when the BLAS has 2 threads. On 2 cores, medians of alternating passes in one process (the plain pass
with its passes of the same length), in two measurements an hour apart (before and after the output projections
went by rows): SmolLM2 at 512 tokens 0.99x and 1.13x as fast as the plain pass, at 2,048 1.15x and 1.16x; GPT-2
small at 512 1.03x and 0.99x, at 1,024 1.06x and 1.08x; Gemma 3 270M at 512 1.07x and 1.01x, at 2,048 1.21x and
1.20x; at 256 tokens lanes were slower (0.87-0.93x, earlier). Lanes on more cores are not measured: with more BLAS
threads the plain pass keeps every core on the products.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .attention import as_heads, block_size, block_values, remember, rotated
from .nn import GATE, by_feature, gelu_new, linear
from .threads import blas_limit, blas_threads_now

if TYPE_CHECKING:
    from .model import Block, Config, KVCache, Linear, Norm, Weights

LANES = 2  # the lanes of a pass: where the BLAS has this many threads (the only count measured)
MIN_ROWS = 512  # shorter passes keep the plain pass: the meetings cost more than the lanes save there
ONE_AT_A_TIME = threading.Lock()  # lane passes from several threads take turns (each sets the BLAS to one thread)


def count(cfg: Config, n_seq: int, hooks) -> int:
    """How many lanes a pass of n_seq positions runs in: LANES, or 1 (the plain pass)."""
    if n_seq < MIN_ROWS or (hooks is not None and hooks.entries):
        return 1
    return LANES if blas_threads_now() == LANES else 1


def blocks(x: np.ndarray, weights: Weights, cfg: Config, cache: KVCache, start: int, ropes, lanes: int,
           on_layer=None) -> np.ndarray:
    """The residual stream [n_seq, n_embd] after every block, for new positions start.. whose keys and values go
    into `cache`'s buffers: model.block for each layer, shared between `lanes` threads. `ropes`: the rotary tables
    of the global and of the local layers (attention.rotary_tables). x is updated in place. on_layer(i), if given,
    hears from lane 0 (this thread) as it ends each layer."""
    plan, shared = Plan.of(cfg, len(x), start, lanes), Shared.of(x, cfg, start)

    taken = [itertools.count() for _ in weights.blocks]  # each layer's attention pairs taken so far

    def lane(i: int, meet) -> None:
        from .model import norm  # here: model imports this module

        shared.normed[plan.rows[i]] = norm(x[plan.rows[i]], weights.blocks[0].ln1, cfg)
        meet()
        for layer, blk in enumerate(weights.blocks):
            local = layer in cfg.local_layers
            after = weights.blocks[layer + 1].ln1 if layer + 1 < len(weights.blocks) else None
            block_share(i, meet, blk, cfg, cache.k[layer], cache.v[layer], start, ropes[local],
                        cfg.sliding_window if local else None, plan, shared, taken[layer], after)
            if i == 0 and on_layer is not None:
                on_layer(layer)

    run(lanes, lane)
    return x


@dataclass(frozen=True)
class Shared:
    """The arrays every lane reads and writes its share of."""

    x: np.ndarray  # the residual stream [n_seq, n_embd], updated in place
    normed: np.ndarray  # its norm before attention, then before the MLP [n_seq, n_embd]
    q: np.ndarray  # queries [n_head, n_seq, d_head]
    z: np.ndarray  # the heads' weighted values [n_seq, n_head, d_head]
    hidden: np.ndarray  # the MLP's hidden layer after its activation, by feature [n_ff, n_seq]
    local_k: np.ndarray | None  # on a sliding-window layer: the keys the new positions see, in order
    local_v: np.ndarray | None  # and their values [n_kv_head, n_keys, d_head] (attention.remember's)

    @classmethod
    def of(cls, x: np.ndarray, cfg: Config, start: int) -> Shared:
        n_seq, dtype = len(x), x.dtype
        local = (cfg.n_kv_head, local_keys(cfg, start, n_seq), cfg.d_head) if cfg.local_layers else None
        return cls(x, np.empty_like(x), np.empty((cfg.n_head, n_seq, cfg.d_head), dtype),
                   np.empty((n_seq, cfg.n_head, cfg.d_head), dtype), np.empty((cfg.n_ff, n_seq), dtype),
                   None if local is None else np.empty(local, dtype), None if local is None else np.empty(local, dtype))


def first_seen(cfg: Config, start: int) -> int:
    """The oldest position a sliding-window layer's first new query sees (attention.remember's `first`)."""
    return max(0, start - cfg.sliding_window + 1)


def local_keys(cfg: Config, start: int, n_seq: int) -> int:
    """How many keys a sliding-window layer gathers for a pass (attention.remember's); without such layers, all."""
    return start + n_seq - (first_seen(cfg, start) if cfg.local_layers else 0)


@dataclass(frozen=True)
class Plan:
    """Each lane's share of each step (a list with one entry per lane), the same in every block."""

    rows: list[slice]  # of the positions: the norms, the output projection and the MLP's output
    heads: list[tuple[slice, slice]]  # query heads and key/value heads, for the projections
    hidden: list[slice]  # of the MLP's hidden layer
    pairs: list[tuple[slice, slice]]  # attention's (key heads, block of queries) pairs, global layers, largest first
    local_pairs: list[tuple[slice, slice]]  # and sliding-window layers (whose blocks see fewer keys)

    @classmethod
    def of(cls, cfg: Config, n_seq: int, start: int, lanes: int) -> Plan:
        """The shares of a pass over n_seq new positions after `start` cached ones."""
        return cls(shares(n_seq, lanes), head_shares(cfg, lanes), shares(cfg.n_ff, lanes),
                   queue(cfg, n_seq, start + n_seq, lanes),
                   queue(cfg, n_seq, local_keys(cfg, start, n_seq), lanes))


def shares(total: int, lanes: int) -> list[slice]:
    """range(total) in `lanes` runs of near-equal length."""
    bounds = [round(total * i / lanes) for i in range(lanes)] + [total]
    return [slice(lo, hi) for lo, hi in zip(bounds, bounds[1:])]


def head_shares(cfg: Config, lanes: int) -> list[tuple[slice, slice]]:
    """The projections' heads in `lanes` runs of near-equal work, in order: query heads (one product each), then
    key/value heads (two each, kept together for the cache). Each lane gets a run of each kind, maybe empty."""
    units = [(0, h) for h in range(cfg.n_head)] + [(1, g) for g in range(cfg.n_kv_head)]
    total, done, lane_of = cfg.n_head + 2 * cfg.n_kv_head, 0, []
    for kind, _ in units:
        lane_of.append(min(lanes - 1, done * lanes // total))
        done += 1 + kind
    runs = []
    for lane in range(lanes):
        mine = [(kind, h) for (kind, h), owner in zip(units, lane_of) if owner == lane]
        runs.append(tuple(span([h for kind, h in mine if kind == which]) for which in (0, 1)))
    return runs


def span(heads: list[int]) -> slice:
    return slice(heads[0], heads[-1] + 1) if heads else slice(0, 0)


def queue(cfg: Config, n_seq: int, n_keys: int, lanes: int) -> list[tuple[slice, slice]]:
    """Attention's work as (key heads, block of queries) pairs, for blocks of attention.attend's size over n_keys
    keys, largest first (queries times the keys they see): the lanes take them one at a time as they come free, so
    that a lane slowed down by the machine takes fewer. When the key heads split evenly, a pair is a lane's run of
    them (one product per block for all its heads); otherwise (SmolLM2: 3 key heads; Gemma 3: 1) one key head."""
    size = block_size(cfg, n_keys)
    queries = [slice(lo, min(lo + size, n_seq)) for lo in range(0, n_seq, size)]
    even = cfg.n_kv_head % lanes == 0
    runs = shares(cfg.n_kv_head, lanes) if even else [slice(kv, kv + 1) for kv in range(cfg.n_kv_head)]
    cost = {block.start: (block.stop - block.start) * (block.stop + n_keys - n_seq) for block in queries}
    return sorted(((heads, block) for heads in runs for block in queries), key=lambda pair: -cost[pair[1].start])


def block_share(i: int, meet, blk: Block, cfg: Config, k_buf, v_buf, start: int, rope, window: int | None,
                plan: Plan, shared: Shared, taken, after: Norm | None) -> None:
    """Lane i's share of model.block for one layer (see the module's docstring); `meet()` waits for the others.
    taken: the layer's count of attention pairs taken (an itertools.count shared by the lanes). The lane's rows of
    shared.normed hold the norm before attention when it starts, and the next block's (`after`) when it ends."""
    from .model import norm  # here: model imports this module

    x, normed, rows = shared.x, shared.normed, plan.rows[i]
    project_heads(plan.heads[i], normed, blk, cfg, k_buf, v_buf, start, rope, window, shared)
    meet()
    if window is None:
        attend_pairs(plan.pairs, taken, cfg, k_buf, v_buf, start, 0, None, shared)
    else:
        attend_pairs(plan.local_pairs, taken, cfg, shared.local_k, shared.local_v, start, first_seen(cfg, start),
                     window, shared)
    meet()
    add_rows(linear(shared.z[rows].reshape(-1, cfg.n_head * cfg.d_head), blk.w_o), rows, blk.ln1_post, cfg, x)
    normed[rows] = norm(x[rows], blk.ln2, cfg)
    meet()
    hidden_columns(plan.hidden[i], normed, blk, cfg, shared.hidden)
    meet()
    add_rows(by_feature(shared.hidden[:, rows].T, blk.w_out).T, rows, blk.ln2_post, cfg, x)
    if after is not None:
        normed[rows] = norm(x[rows], after, cfg)
    meet()


def add_rows(part: np.ndarray, rows: slice, post, cfg: Config, x: np.ndarray) -> None:
    """A sublayer's output for positions `rows` into the residual stream x, normalized first where the model has
    post-norms (Gemma 3): by position, as model.mlp hands it over, so that the norm's sums go as the plain pass's."""
    from .model import norm  # here: model imports this module

    x[rows] += norm(np.ascontiguousarray(part), post, cfg) if cfg.post_norms else part


def rows_of(p: Linear, part: slice) -> Linear:
    """The layer that computes output columns `part` of p: its weight's rows and bias entries."""
    return type(p)(p.w[part], None if p.b is None else p.b[part])


def project_heads(heads: tuple[slice, slice], x: np.ndarray, blk: Block, cfg: Config, k_buf, v_buf, start: int,
                  rope, window: int | None, shared: Shared) -> None:
    """This lane's query heads into shared.q, and its key/value heads into the cache's buffers (through
    attention.remember, as the plain pass writes them; on a sliding-window layer also the keys and values its new
    positions see, into shared.local_k and local_v)."""
    (q_heads, kv_heads), d = heads, cfg.d_head
    n_q, n_kv = cfg.n_head * d, cfg.n_kv_head * d
    if q_heads.stop > q_heads.start:
        fused = linear(x, rows_of(blk.w_qkv, slice(q_heads.start * d, q_heads.stop * d)))  # [n_seq, heads * d_head]
        shared.q[q_heads] = rotated(fused, blk.q_norm, cfg, rope)
    if kv_heads.stop > kv_heads.start:
        lo, hi = kv_heads.start * d, kv_heads.stop * d
        k = rotated(linear(x, rows_of(blk.w_qkv, slice(n_q + lo, n_q + hi))), blk.k_norm, cfg, rope)
        v = as_heads(linear(x, rows_of(blk.w_qkv, slice(n_q + n_kv + lo, n_q + n_kv + hi))), cfg)
        keys, values, _ = remember(k_buf[kv_heads], v_buf[kv_heads], k, v, start, window)
        if window is not None:
            shared.local_k[kv_heads], shared.local_v[kv_heads] = keys, values


def attend_pairs(pairs, taken, cfg: Config, keys, values, start: int, first: int, window: int | None,
                 shared: Shared) -> None:
    """Weighted values [n_seq, n_head, d_head] into shared.z for (key heads, block) pairs taken from `pairs` in
    order, one at a time, until none is left (`taken` counts those the lanes took: next() on it is atomic), as
    attention.attend computes them: each block of queries against the keys it may see, keys[:, 0] being position
    `first`'s (a buffer of every position, or a sliding-window layer's gathered keys)."""
    q, group = shared.q, cfg.n_head // cfg.n_kv_head
    end = start + q.shape[1]
    while (index := next(taken)) < len(pairs):
        kv, block = pairs[index]
        heads = slice(kv.start * group, kv.stop * group)
        z = block_values(q[heads, block], keys[kv, :end - first], values[kv, :end - first], cfg, start + block.start,
                         first, window)
        shared.z[block, heads] = z.transpose(1, 0, 2)


def hidden_columns(part: slice, x: np.ndarray, blk: Block, cfg: Config, hidden: np.ndarray) -> None:
    """Features `part` of the MLP's hidden layer [n_ff, n_seq], after its activation (model.mlp's first half)."""
    mine = hidden[part]  # the products and the activation are written here, in place: no copies of [part, n_seq]
    if cfg.mlp == "gelu":
        gelu_new(by_feature(x, rows_of(blk.w_in, part), out=mine), out=mine)
        return
    up = slice(cfg.n_ff + part.start, cfg.n_ff + part.stop)
    GATE[cfg.mlp](by_feature(x, rows_of(blk.w_in, part), out=mine), out=mine)
    mine *= by_feature(x, rows_of(blk.w_in, up))


def run(lanes: int, lane) -> None:
    """lane(i, meet) for i in 0..lanes-1, lane 0 here and the others in threads of their own, with a one-thread
    BLAS; meet() returns once every lane has called it. An error (or Ctrl-C) in any lane stops them all and is
    raised here."""
    barrier, errors = threading.Barrier(lanes), []

    def guarded(i: int) -> None:
        try:
            lane(i, barrier.wait)
        except threading.BrokenBarrierError:
            pass  # another lane failed: its error is the one raised
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            errors.append(error)
            barrier.abort()

    workers = [threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(1, lanes)]
    with ONE_AT_A_TIME, blas_limit(1):
        for worker in workers:
            worker.start()
        try:
            lane(0, barrier.wait)
        except threading.BrokenBarrierError:
            if not errors:
                raise
        except BaseException:
            barrier.abort()
            raise
        finally:
            for worker in workers:
                worker.join()
    if errors:
        raise errors[0]
