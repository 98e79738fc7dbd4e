"""A long pass's blocks shared between threads ("lanes"), each with a one-thread BLAS.

OpenBLAS splits each matrix product between its threads, but NumPy runs everything else of a pass on one core:
norms, rotations, the softmax's passes over the scores, the MLP's activation. In a 512-token SmolLM2 pass that
is about 30% of the time, with the other core idle. Here each of n lanes (one per BLAS thread) takes its share of
every step of a block, as tensor-parallel training splits a model between devices:

    step                       a lane's share
    norm before attention      its rows
    queries, keys, values      its heads (a run of the fused projection's rows), rotated and written to the cache
    attention                  its (key head, block of queries) pairs, dealt out by the keys they see
    output projection          its columns of the residual stream (a slice of w_o's rows), added in place
    norm before the MLP        its rows
    MLP in and activation      its columns of the hidden layer (gate and up alike)
    MLP out                    its columns of the residual stream, added in place

and the lanes wait for each other between steps (a threading.Barrier, 7 times per block, ~50 us each). Every
number is computed by the functions the plain pass uses, on slices: a product's output columns from a slice of
the weight's rows are the same sums, and element-wise steps do not depend on their neighbours. On SmolLM2 and
GPT-2 small the residual stream came out bit-identical to the plain pass's with a one-thread BLAS (512 and 4,096
tokens); OpenBLAS may still sum a slice in another order (other kernels for small matrices, long products split
otherwise with more threads), within float32 rounding, which is what tests/test_lanes.py checks.

model.one_pass uses 2 lanes (`count`) for passes of at least MIN_ROWS positions without hooks (which see whole
activations), when the BLAS has 2 threads and every layer attends to all earlier positions and adds its output
unnormalized (not Gemma 3, whose sliding-window layers and post-norms keep the plain pass). On 2 cores, medians of
alternating passes in one process: SmolLM2 at 512 tokens 1.16x as fast as the plain pass (18 of 20 pairs
faster), at 2,048 1.30x; GPT-2 small at 512 0.99x, at 1,024 1.17x; at 256 tokens lanes were slower (0.87-0.93x).
Lanes on more cores are not measured: with more BLAS threads the plain pass keeps every core on the products.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .attention import as_heads, block_size, block_values, rotated
from .nn import gelu_new, linear, silu
from .threads import blas_limit, blas_threads_now

if TYPE_CHECKING:
    from .model import Block, Config, KVCache, Linear, Weights

LANES = 2  # the lanes of a pass: where the BLAS has this many threads (the only count measured)
MIN_ROWS = 512  # shorter passes keep the plain pass: 7 meetings per block cost more than the lanes save there
ALIGN = 16  # column shares start at multiples of 16 numbers (64 bytes), so that no two lanes write one cache line
ONE_AT_A_TIME = threading.Lock()  # lane passes from several threads take turns (each sets the BLAS to one thread)


def count(cfg: Config, n_seq: int, hooks) -> int:
    """How many lanes a pass of n_seq positions runs in: LANES, or 1 (the plain pass)."""
    if n_seq < MIN_ROWS or (hooks is not None and hooks.entries) or cfg.local_layers or cfg.post_norms:
        return 1
    return LANES if blas_threads_now() == LANES else 1


def blocks(x: np.ndarray, weights: Weights, cfg: Config, cache: KVCache, start: int, rope, lanes: int) -> np.ndarray:
    """The residual stream [n_seq, n_embd] after every block, for new positions start.. whose keys and values go
    into `cache`'s buffers: model.block for each layer, shared between `lanes` threads. x is updated in place."""
    n_seq = len(x)
    plan = Plan.of(cfg, n_seq, start, lanes)
    shared = Shared(x, np.empty_like(x), np.empty((cfg.n_head, n_seq, cfg.d_head), x.dtype),
                    np.empty((n_seq, cfg.n_head, cfg.d_head), x.dtype), np.empty((n_seq, cfg.n_ff), x.dtype))

    def lane(i: int, meet) -> None:
        for layer, blk in enumerate(weights.blocks):
            block_share(i, meet, blk, cfg, cache.k[layer], cache.v[layer], start, rope, plan, shared)

    run(lanes, lane)
    return x


@dataclass(frozen=True)
class Shared:
    """The arrays every lane reads and writes its share of."""

    x: np.ndarray  # the residual stream [n_seq, n_embd], updated in place
    normed: np.ndarray  # its norm before attention, then before the MLP [n_seq, n_embd]
    q: np.ndarray  # queries [n_head, n_seq, d_head]
    z: np.ndarray  # the heads' weighted values [n_seq, n_head, d_head]
    hidden: np.ndarray  # the MLP's hidden layer after its activation [n_seq, n_ff]


@dataclass(frozen=True)
class Plan:
    """Each lane's share of each step (a list with one entry per lane), the same in every block."""

    rows: list[slice]  # of the positions, for the norms
    heads: list[slice]  # of the fused projection's heads: queries 0..n_head-1, then keys, then values
    columns: list[slice]  # of the residual stream, for the output projection and the MLP's
    hidden: list[slice]  # of the MLP's hidden layer
    pairs: list[list[tuple[slice, int]]]  # attention's (key heads, first query of a block) pairs

    @classmethod
    def of(cls, cfg: Config, n_seq: int, start: int, lanes: int) -> Plan:
        """The shares of a pass over n_seq new positions after `start` cached ones."""
        return cls(shares(n_seq, lanes), shares(cfg.n_head + 2 * cfg.n_kv_head, lanes),
                   shares(cfg.n_embd, lanes, ALIGN), shares(cfg.n_ff, lanes, ALIGN), deal(cfg, n_seq, start, lanes))


def shares(total: int, lanes: int, align: int = 1) -> list[slice]:
    """range(total) in `lanes` runs of near-equal length, each starting at a multiple of `align`."""
    bounds = [min(total, round(total * i / lanes / align) * align) for i in range(lanes)] + [total]
    return [slice(lo, hi) for lo, hi in zip(bounds, bounds[1:])]


def deal(cfg: Config, n_seq: int, start: int, lanes: int) -> list[list[tuple[slice, int]]]:
    """Attention's work as (key heads, first query of a block) pairs; blocks are attention.attend's. When the key
    heads split evenly, each lane takes its run of them in every block (one product per block for all its heads);
    otherwise (SmolLM2: 3 key heads) each key head in each block is a pair, dealt by the keys it sees, largest
    first, each to the lane with the least so far."""
    size = block_size(cfg, start + n_seq)
    firsts = range(0, n_seq, size)
    if cfg.n_kv_head % lanes == 0:
        return [[(heads, lo) for lo in firsts] for heads in shares(cfg.n_kv_head, lanes)]
    pairs = sorted(((slice(kv, kv + 1), lo) for kv in range(cfg.n_kv_head) for lo in firsts),
                   key=lambda pair: -min(pair[1] + size, n_seq))
    dealt, work = [[] for _ in range(lanes)], [0] * lanes
    for heads, lo in pairs:
        lane = work.index(min(work))
        dealt[lane].append((heads, lo))
        work[lane] += start + min(lo + size, n_seq)
    return dealt


def block_share(i: int, meet, blk: Block, cfg: Config, k_buf, v_buf, start: int, rope, plan: Plan,
                shared: Shared) -> None:
    """Lane i's share of model.block for one layer (see the module's docstring); `meet()` waits for the others."""
    from .model import norm  # here: model imports this module

    x, normed, rows, columns = shared.x, shared.normed, plan.rows[i], plan.columns[i]
    normed[rows] = norm(x[rows], blk.ln1, cfg)
    meet()
    project_heads(plan.heads[i], normed, blk, cfg, k_buf, v_buf, start, rope, shared.q)
    meet()
    attend_pairs(plan.pairs[i], cfg, k_buf, v_buf, start, shared.q, shared.z)
    meet()
    x[:, columns] += linear(shared.z.reshape(len(x), -1), rows_of(blk.w_o, columns))
    meet()
    normed[rows] = norm(x[rows], blk.ln2, cfg)
    meet()
    hidden_columns(plan.hidden[i], normed, blk, cfg, shared.hidden)
    meet()
    x[:, columns] += linear(shared.hidden, rows_of(blk.w_out, columns))
    meet()


def rows_of(p: Linear, part: slice) -> Linear:
    """The layer that computes output columns `part` of p: its weight's rows and bias entries."""
    return type(p)(p.w[part], None if p.b is None else p.b[part])


def project_heads(heads: slice, x: np.ndarray, blk: Block, cfg: Config, k_buf, v_buf, start: int, rope,
                  q: np.ndarray) -> None:
    """Heads `heads` of the fused projection (queries 0..n_head-1, then keys, then values): queries into q, keys
    and values into the cache's buffers at positions start.., as attention.heads_of and remember do."""
    d, n_q, n_kv = cfg.d_head, cfg.n_head, cfg.n_kv_head
    fused = linear(x, rows_of(blk.w_qkv, slice(heads.start * d, heads.stop * d)))  # [n_seq, heads * d_head]
    end = start + len(x)

    def part(lo: int, hi: int) -> tuple[np.ndarray, int, int]:
        """Those of this lane's heads within fused heads lo..hi-1: (their columns, first, last + 1 within lo..)."""
        a, b = max(heads.start, lo), min(heads.stop, hi)
        return fused[:, (a - heads.start) * d:(b - heads.start) * d], a - lo, b - lo

    cols, a, b = part(0, n_q)
    if a < b:
        q[a:b] = rotated(cols, blk.q_norm, cfg, rope)
    cols, a, b = part(n_q, n_q + n_kv)
    if a < b:
        k_buf[a:b, start:end] = rotated(cols, blk.k_norm, cfg, rope)
    cols, a, b = part(n_q + n_kv, n_q + 2 * n_kv)
    if a < b:
        v_buf[a:b, start:end] = as_heads(cols, cfg)


def attend_pairs(pairs, cfg: Config, k_buf, v_buf, start: int, q: np.ndarray, z: np.ndarray) -> None:
    """Weighted values [n_seq, n_head, d_head] for this lane's (key heads, block) pairs, as attention.attend
    computes them: each block of queries against the keys up to its own end."""
    n_seq, group = q.shape[1], cfg.n_head // cfg.n_kv_head
    size = block_size(cfg, start + n_seq)
    for kv, lo in pairs:
        hi, heads = min(lo + size, n_seq), slice(kv.start * group, kv.stop * group)
        keys, values = k_buf[kv, :start + hi], v_buf[kv, :start + hi]
        z[lo:hi, heads] = block_values(q[heads, lo:hi], keys, values, cfg, start + lo, 0, None).transpose(1, 0, 2)


def hidden_columns(part: slice, x: np.ndarray, blk: Block, cfg: Config, hidden: np.ndarray) -> None:
    """Columns `part` of the MLP's hidden layer, after its activation (model.mlp's first half)."""
    if cfg.mlp == "gelu":
        hidden[:, part] = gelu_new(linear(x, rows_of(blk.w_in, part)))
        return
    act = silu if cfg.mlp == "swiglu" else gelu_new
    up = slice(cfg.n_ff + part.start, cfg.n_ff + part.stop)
    hidden[:, part] = act(linear(x, rows_of(blk.w_in, part))) * linear(x, rows_of(blk.w_in, up))


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
