"""Several sequences' next tokens in one pass over the weights: the batched decode step.

Each sequence keeps its own KVCache, with its own length (ragged: nothing is padded, nothing computed for
padding). A step takes one new token per sequence, B sequences in all: the matrix products (qkv, w_o, the
MLP, the unembedding) run on the B rows at once, so each weight matrix is read from memory once per step
instead of B times, while attention runs per row against that row's own cache, through the very function
a single sequence uses (`attention.attend`). Rotary angles and learned positions are taken per row, at each
row's own position; a local layer's ring buffer is each row's own too.

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

from .attention import KVCache, attend, heads_of
from .hooks import NO_POINTS as NO_HOOKS
from .model import Block, Config, Linear, Weights, norm, post_norm
from .nn import gelu_new, linear, rope_tables, silu


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
    for i, blk in enumerate(weights.blocks):
        local = i in cfg.local_layers
        x = block_rows(x, blk, cfg, [c.k[i] for c in caches], [c.v[i] for c in caches], starts,
                       local_rope if local else rope, cfg.sliding_window if local else None)
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
    model.rotary_tables, row r at position starts[r]); (None, None) with learned positions."""
    if cfg.positions != "rotary":
        return None, None
    positions = np.asarray(starts)
    rope = rope_tables(positions, cfg.d_head, cfg.rope_theta, dtype)
    if not cfg.local_layers or cfg.rope_local_theta in (None, cfg.rope_theta):
        return rope, rope
    return rope, rope_tables(positions, cfg.d_head, cfg.rope_local_theta, dtype)


def block_rows(x: np.ndarray, blk: Block, cfg: Config, k_bufs, v_bufs, starts: list[int], rope,
               window: int | None) -> np.ndarray:
    """model.block for B rows that are B sequences: [B, n_embd] -> [B, n_embd]."""
    attn_out = attention_rows(norm(x, blk.ln1, cfg), blk, cfg, k_bufs, v_bufs, starts, rope, window)
    x = x + post_norm(attn_out, blk.ln1_post, cfg, NO_HOOKS, "ln1_post.in")
    mlp_out = post_norm(mlp_rows(norm(x, blk.ln2, cfg), blk, cfg), blk.ln2_post, cfg, NO_HOOKS, "ln2_post.in")
    return x + mlp_out


def attention_rows(x: np.ndarray, blk: Block, cfg: Config, k_bufs, v_bufs, starts: list[int], rope,
                   window: int | None) -> np.ndarray:
    """Attention for B sequences' new positions: projections on all rows at once, each row attending to its
    own cache: [B, n_embd] -> [B, n_embd]."""
    fused = linear_rows(x, blk.w_qkv)  # [B, n_embd] -> [B, n_q + 2 * n_kv]
    q, k, v = heads_of(fused, blk, cfg, rope, NO_HOOKS)  # [n_head, B, d_head], [n_kv_head, B, d_head]
    z = np.concatenate([attend(q[:, r:r + 1], k[:, r:r + 1], v[:, r:r + 1], cfg, k_bufs[r], v_bufs[r], start,
                               NO_HOOKS, window) for r, start in enumerate(starts)])  # [B, n_head, d_head]
    return linear_rows(z.reshape(len(starts), cfg.n_head * cfg.d_head), blk.w_o)  # [B, n_embd]


def mlp_rows(x: np.ndarray, blk: Block, cfg: Config) -> np.ndarray:
    """model.mlp without hook points, its products by linear_rows: [B, n_embd] -> [B, n_embd]."""
    h = linear_rows(x, blk.w_in)  # [B, n_ff] (or [B, 2 * n_ff] for SwiGLU, GeGLU)
    if cfg.mlp == "gelu":
        h = gelu_new(h)
    else:
        act = silu if cfg.mlp == "swiglu" else gelu_new
        h = act(h[:, :cfg.n_ff]) * h[:, cfg.n_ff:]  # gate * up
    return linear_rows(h, blk.w_out)


def linear_rows(x: np.ndarray, p: Linear) -> np.ndarray:
    """x @ p.w.T + b for B rows, computed as (p.w @ x.T).T: OpenBLAS runs the weight matrix times a few
    columns faster than a few rows times the transposed matrix (15-20% of a GPT-2 step at B = 16 on a
    2-core AVX-512 host). One row takes nn.linear, so that a batch of one is the single pass exactly."""
    if x.shape[0] == 1:
        return linear(x, p)
    y = (p.w @ x.T).T  # [out, in] @ [in, B] -> [out, B], seen as [B, out]
    if p.b is not None:
        y += p.b
    return y
