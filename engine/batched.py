"""Several sequences' next tokens in one pass over the weights: the batched decode step.

Each sequence keeps its own KVCache, with its own length (ragged: nothing is padded, nothing computed for
padding). A step takes one new token per sequence, B sequences in all: the matrix products (qkv, w_o, the
MLP, the unembedding) run on the B rows at once, so each weight matrix is read from memory once per step
instead of B times. Attention runs against each row's own cache: for caches that are slots of one
`RowCaches` (as generate_batch.py makes them), in one product for all the rows, each row's scores masked past
its own length (one query per row: a [rows, heads, 1, longest] score tensor); for separate caches, row by row
through the very function a single sequence uses (`attention.attend`). Rotary angles and learned positions
are taken per row, at each row's own position; a local layer's ring buffer is each row's own too.

Prompts are not batched: each is prefilled alone by `forward` (no padding compute), then its cache joins
the decode steps (see generate_batch.py).

Rows agree with single-sequence passes to float32 rounding, not bit for bit: BLAS sums a one-row product
(a matrix-vector product) in another order than a many-row one. With one row the step is the single pass.

No hooks: a hook point sees one pass over one sequence's positions, which a batch row is not. Callers with
hooks (steering, ablation, recording) run each sequence alone with `forward`; generate_batch.py does so.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from .attention import KVCache, RowCaches, attend, heads_of
from .hooks import NO_POINTS as NO_HOOKS
from .model import Block, Config, Linear, Weights, norm, post_norm
from .nn import GATE, gelu_new, linear, rope_tables, softmax


def forward_rows(ids: Sequence[int], weights: Weights, cfg: Config,
                 caches: Sequence[KVCache]) -> tuple[np.ndarray, list[KVCache]]:
    """One new token per sequence, each after its own cache: (logits [B, n_vocab], caches that include them).

    Each cache must have room for one more position (length < n_ctx): sliding a full window is the caller's.
    """
    if len(ids) != len(caches) or not caches:
        raise ValueError(f"forward_rows needs one token per cache, and at least one: {len(ids)} tokens, "
                         f"{len(caches)} caches")
    starts = [c.length for c in caches]
    if max(starts) >= cfg.n_ctx:
        raise ValueError(f"a cache already holds the model's context of {cfg.n_ctx} positions: slide it first")
    x = embed_rows(np.asarray(ids, dtype=np.int64), weights, cfg, starts)  # [B, n_embd]
    rope, local_rope = rotary_rows(cfg, starts, weights.embed.dtype)
    shared = shared_rows(caches)
    for i, blk in enumerate(weights.blocks):
        local = i in cfg.local_layers
        kv = ((shared.k[i], shared.v[i], [c.slot for c in caches]) if shared is not None
              else ([c.k[i] for c in caches], [c.v[i] for c in caches], None))
        x = block_rows(x, blk, cfg, kv, starts, local_rope if local else rope, cfg.sliding_window if local else None)
    x = norm(x, weights.ln_final, cfg)
    logits = linear_rows(x, Linear(weights.unembed))  # [B, n_embd] -> [B, n_vocab]
    return logits, [dataclasses.replace(c, length=c.length + 1) for c in caches]


def embed_rows(ids: np.ndarray, weights: Weights, cfg: Config, starts: list[int]) -> np.ndarray:
    """Each row's token embedding, plus its position's embedding where the model learns them: [B, n_embd]."""
    x = weights.embed[ids]  # [B, n_embd]
    if cfg.embed_scale is not None:
        x = x * x.dtype.type(cfg.embed_scale)
    if cfg.positions == "learned":
        x = x + weights.pos_embed[starts]
    return x


def rotary_rows(cfg: Config, starts: list[int], dtype):
    """cos and sin [B, d_head] of each row's own position, for the global and the local layers (as
    attention.rotary_tables, row r at position starts[r]); (None, None) with learned positions."""
    if cfg.positions != "rotary":
        return None, None
    positions = np.asarray(starts)
    rope = rope_tables(positions, cfg.d_head, cfg.rope_theta, dtype)
    if not cfg.local_layers or cfg.rope_local_theta in (None, cfg.rope_theta):
        return rope, rope
    return rope, rope_tables(positions, cfg.d_head, cfg.rope_local_theta, dtype)


def shared_rows(caches: Sequence[KVCache]) -> RowCaches | None:
    """The RowCaches whose slots all the caches are, if they are (and more than one): else None."""
    shared = caches[0].rows
    if shared is None or len(caches) == 1 or any(c.rows is not shared for c in caches):
        return None
    return shared


def block_rows(x: np.ndarray, blk: Block, cfg: Config, kv, starts: list[int], rope,
               window: int | None) -> np.ndarray:
    """model.block for B rows that are B sequences: [B, n_embd] -> [B, n_embd]. `kv`: the layer's key buffers,
    value buffers and the rows' slots in them (a RowCaches' [slots, ...] buffers), or each row's own (slots None)."""
    attn_out = attention_rows(norm(x, blk.ln1, cfg), blk, cfg, kv, starts, rope, window)
    x = x + post_norm(attn_out, blk.ln1_post, cfg, NO_HOOKS, "ln1_post.in")
    mlp_out = post_norm(mlp_rows(norm(x, blk.ln2, cfg), blk, cfg), blk.ln2_post, cfg, NO_HOOKS, "ln2_post.in")
    return x + mlp_out


def attention_rows(x: np.ndarray, blk: Block, cfg: Config, kv, starts: list[int], rope,
                   window: int | None) -> np.ndarray:
    """Attention for B sequences' new positions: projections on all rows at once, each row attending to its
    own cache: [B, n_embd] -> [B, n_embd]."""
    fused = linear_rows(x, blk.w_qkv)  # [B, n_embd] -> [B, n_q + 2 * n_kv]
    q, k, v = heads_of(fused, blk, cfg, rope, NO_HOOKS)  # [n_head, B, d_head], [n_kv_head, B, d_head]
    k_bufs, v_bufs, slots = kv
    if slots is not None:
        z = attend_slots(q, k, v, cfg, k_bufs, v_bufs, np.asarray(slots), np.asarray(starts))
    else:
        z = np.concatenate([attend(q[:, r:r + 1], k[:, r:r + 1], v[:, r:r + 1], cfg, k_bufs[r], v_bufs[r], start,
                                   NO_HOOKS, window) for r, start in enumerate(starts)])  # [B, n_head, d_head]
    return linear_rows(z.reshape(len(starts), cfg.n_head * cfg.d_head), blk.w_o)  # [B, n_embd]


def attend_slots(q, k, v, cfg: Config, k_buf, v_buf, slots: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Each row's one new query against its slot of the batch's buffers [slots, n_kv_head, size, d_head], for
    all rows in one product: [B, n_head, d_head]. Slots lo..hi-1 are computed together (a slot between the rows'
    that is not one of them is computed and dropped); each row sees its first min(start + 1, size) keys (a full
    ring buffer holds exactly a local layer's window, in ring order, which attention does not depend on)."""
    size, group = k_buf.shape[2], cfg.n_head // cfg.n_kv_head
    k_buf[slots, :, starts % size], v_buf[slots, :, starts % size] = k.transpose(1, 0, 2), v.transpose(1, 0, 2)
    lo, hi = int(slots.min()), int(slots.max()) + 1
    n_keys = int(min(starts.max() + 1, size))
    keys, values = k_buf[lo:hi, :, :n_keys], v_buf[lo:hi, :, :n_keys]  # [S, n_kv_head, n_keys, d_head]
    queries = np.zeros((hi - lo, cfg.n_kv_head, group, cfg.d_head), q.dtype)  # a slot's query heads by key head
    queries[slots - lo] = q.transpose(1, 0, 2).reshape(len(slots), cfg.n_kv_head, group, cfg.d_head)
    scores = queries @ keys.transpose(0, 1, 3, 2)  # [S, n_kv_head, group, n_keys]
    scores *= scores.dtype.type(1.0 / np.sqrt(cfg.query_pre_attn_scalar or cfg.d_head))
    seen = np.ones(hi - lo, np.int64)  # keys each slot sees (an idle slot: its first, so that softmax is finite)
    seen[slots - lo] = np.minimum(starts + 1, size)
    scores += np.where(np.arange(n_keys) < seen[:, None], 0, -np.inf).astype(scores.dtype)[:, None, None, :]
    z = softmax(scores) @ values  # [S, n_kv_head, group, d_head]
    return z[slots - lo].reshape(len(slots), cfg.n_head, cfg.d_head)


def mlp_rows(x: np.ndarray, blk: Block, cfg: Config) -> np.ndarray:
    """model.mlp without hook points, its products by linear_rows: [B, n_embd] -> [B, n_embd]."""
    h = linear_rows(x, blk.w_in)  # [B, n_ff] (or [B, 2 * n_ff] for SwiGLU, GeGLU)
    if cfg.mlp == "gelu":
        h = gelu_new(h)
    else:
        h = GATE[cfg.mlp](h[:, :cfg.n_ff]) * h[:, cfg.n_ff:]  # gate * up
    return linear_rows(h, blk.w_out)


def linear_rows(x: np.ndarray, p: Linear) -> np.ndarray:
    """x @ p.w.T + b for B rows, computed as (p.w @ x.T).T where p.w is row-major: OpenBLAS runs the weight
    matrix times a few columns faster than a few rows times the transposed matrix (15-20% of a GPT-2 step at
    B = 16 on a 2-core AVX-512 host). A column-major p.w (a tied embedding) is the other way round (GPT-2's
    unembedding of 16 rows: 15 ms as x @ p.w.T, 24 ms so). One row takes nn.linear, so that a batch of one is
    the single pass exactly."""
    if x.shape[0] == 1:
        return linear(x, p)
    y = (p.w @ x.T).T if p.w.flags.c_contiguous else x @ p.w.T  # [B, out]
    if p.b is not None:
        y += p.b
    return y
