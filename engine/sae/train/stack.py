"""Part of the forward pass: the blocks up to a layer, or from a layer on, over one window of tokens.

Collecting residuals needs only blocks 0..L, so the pass stops there (no hook, no logits); the metrics
run blocks 0..L-1 once and blocks L.. once per variant (clean, SAE spliced in, zero-ablated), each with
its hooks. Each window is a fresh sequence with a KV cache of its own length (not the model's whole
context, whose buffers would cost page faults for nothing).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ...attention import rotary_tables
from ...errors import InputError
from ...hooks import Hooks, points
from ...lm import LanguageModel
from ...model import KVCache, block, embed, norm


@dataclasses.dataclass(frozen=True)
class Prefix:
    """The state after blocks 0..layer-1 of one window: what the later blocks need."""
    x: np.ndarray  # [n_seq, n_embd] the stream entering block `layer`
    cache: KVCache  # keys and values of blocks 0..layer-1 (later layers' buffers are overwritten per run)
    rope: tuple | None  # rotary tables of the window's positions (None with learned positions)
    local_rope: tuple | None


def check_layer(lm: LanguageModel, layer: int) -> None:
    if not 0 <= layer < lm.config.n_layer:
        raise InputError(f"layer {layer} is out of range: {lm.name} has blocks 0..{lm.config.n_layer - 1}; "
                         "give --layer in that range")


def run_blocks(lm: LanguageModel, x: np.ndarray, start: Prefix, layers: range, hooks: Hooks | None) -> np.ndarray:
    """The stream after `layers` (consecutive blocks), starting from `x`: [n_seq, n_embd]."""
    cfg = lm.config
    for i in layers:
        local = i in cfg.local_layers
        x = block(x, lm.weights.blocks[i], cfg, start.cache.k[i], start.cache.v[i], 0,
                  start.local_rope if local else start.rope, points(hooks, i, 0),
                  cfg.sliding_window if local else None)
    return x


def prefix(lm: LanguageModel, ids: np.ndarray, layer: int) -> Prefix:
    """Blocks 0..layer-1 of one window of token ids [n_seq]."""
    cfg = dataclasses.replace(lm.config, n_ctx=len(ids))
    rope, local_rope = rotary_tables(cfg, 0, len(ids), lm.weights.embed.dtype)
    empty = Prefix(embed(np.asarray(ids, np.int64), lm.weights, cfg, 0, points(None, None, 0)),
                   KVCache.empty(cfg, lm.weights.embed.dtype), rope, local_rope)
    return dataclasses.replace(empty, x=run_blocks(lm, empty.x, empty, range(layer), None))


def residual(lm: LanguageModel, ids: np.ndarray, layer: int) -> np.ndarray:
    """The residual stream after block `layer` (blocks.L.resid_post) of one window: [n_seq, n_embd]."""
    start = prefix(lm, ids, layer)
    return run_blocks(lm, start.x, start, range(layer, layer + 1), None)


def logits_from(lm: LanguageModel, start: Prefix, layer: int, hooks: Hooks | None) -> np.ndarray:
    """Every position's logits, running blocks layer.. from `start` with `hooks`: [n_seq, n_vocab]."""
    x = run_blocks(lm, start.x, start, range(layer, lm.config.n_layer), hooks)
    return norm(x, lm.weights.ln_final, lm.config) @ lm.weights.unembed.T
