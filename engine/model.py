"""The transformer forward pass: GPT-2, Llama and Gemma 3 as one pre-norm residual stack with a KV cache.

The architectures differ in a few places, each chosen by a field of `Config`: the norm (LayerNorm or
RMSNorm), where positions enter (learned embeddings or rotary rotation of queries and keys), the MLP
(GELU, SwiGLU or GeGLU), and Gemma 3's additions: scaled embeddings, norms after attention and MLP too
("sandwich" norms), normalized queries and keys, and local layers that attend to a sliding window
(engine/attention.py). Everything else is shared.

Weights have the engine's own, architecture-neutral names (`embed`, `pos_embed`, `ln1`, `w_qkv`, `w_o`,
`ln2`, `w_in`, `w_out`, `ln_final`, `unembed`, after TransformerLens' W_E, W_Q..., W_U); each checkpoint
format's tensors are mapped onto them at load.
Every matrix is stored [out, in] like PyTorch's nn.Linear, so a layer is `x @ w.T + b`: for one
token that is a matrix-vector product reading the matrix row by row, which OpenBLAS runs faster
than the [in, out] layout of GPT-2's Conv1D checkpoints (those are used as transposed views).

Each activation passes a named hook point, `hook("attn_out", value)`, which returns the value unchanged
when no hook is set (see `hooks.py`): recording, steering and ablation are all hooks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from . import lanes
from .attention import KVCache, attention, rotary_tables
from .hooks import Hooks, points
from .nn import GATE, by_feature, gelu_new, layer_norm, linear, rms_norm, times_transposed

__all__ = ["Config", "Linear", "Norm", "Block", "Weights", "KVCache", "linear", "norm", "forward", "forward_chunks", "astype"]


@dataclass(frozen=True)
class Config:
    arch: str  # the architecture's registry name (engine/arch/: "gpt2", "llama", ...), for people only
    n_vocab: int  # rows of the embedding matrix (vocab_size)
    n_ctx: int  # longest sequence the model was trained on (n_positions / max_position_embeddings)
    n_embd: int  # width of the residual stream (hidden_size)
    n_layer: int  # number of transformer blocks
    n_head: int  # query heads per block
    n_kv_head: int  # key/value heads; fewer than n_head means grouped-query attention
    n_ff: int  # width of the MLP's hidden layer (4 * n_embd in GPT-2)
    norm_eps: float  # epsilon of every LayerNorm / RMSNorm
    norm: str  # "layernorm" (centre, scale, shift: GPT-2) or "rmsnorm" (divide by the root mean square: Llama)
    positions: str  # "learned" (a position embedding added to the token's) or "rotary" (queries and keys rotated)
    mlp: str  # "gelu" (one matrix in, GELU), "swiglu" (gate and up matrices, SiLU(gate) * up) or "geglu"
    # (Gemma: GELU's tanh approximation in place of SiLU)
    d_head: int  # width of one attention head (n_embd // n_head in GPT-2 and Llama)
    rope_theta: float | None = None  # base of the rotary frequencies; None with learned positions
    qkv_bias: bool = False  # whether w_qkv has a bias (GPT-2 and Qwen2: yes; Llama: no)
    tied: bool = False  # whether unembed is embed (GPT-2, and many small models); else a matrix of its own
    embed_scale: float | None = None  # token embeddings multiplied by this, in the computing dtype (Gemma: sqrt(n_embd))
    post_norms: bool = False  # attention's and the MLP's outputs normalized before the residual add (Gemma)
    qk_norm: bool = False  # each head's queries and keys RMS-normalized before the rotation (Gemma 3)
    query_pre_attn_scalar: float | None = None  # scores scaled by 1/sqrt(this); None: 1/sqrt(d_head)
    sliding_window: int | None = None  # positions a local layer attends to, its own included
    local_layers: tuple[int, ...] = ()  # blocks attending to the sliding window; the others see everything
    rope_local_theta: float | None = None  # rotary base of the local layers; None: rope_theta


def short_repr(weights) -> str:
    """A weights dataclass with arrays as dtype[shape] and blocks as the first of them: a line, not megabytes."""
    def one(name: str, value) -> str:
        if name == "unembed" and value is weights.embed:
            return "embed (tied)"
        if isinstance(value, tuple) and value and isinstance(value[0], Block):
            return f"({len(value)} blocks like {value[0]!r})"
        if hasattr(value, "shape") and hasattr(value, "dtype"):
            return f"{value.dtype}[{', '.join(map(str, value.shape))}]"
        return repr(value)

    fields = (f"{f.name}={one(f.name, getattr(weights, f.name))}" for f in dataclasses.fields(weights))
    return f"{type(weights).__name__}({', '.join(fields)})"


@dataclass(frozen=True)
class Linear:
    w: np.ndarray  # [out, in]
    b: np.ndarray | None = None  # [out], or None where the architecture has no bias

    __repr__ = short_repr


@dataclass(frozen=True)
class Norm:
    g: np.ndarray  # [n_embd] scale
    b: np.ndarray | None = None  # [n_embd] shift; LayerNorm only

    __repr__ = short_repr


@dataclass(frozen=True)
class Block:
    ln1: Norm  # before attention
    w_qkv: Linear  # fused query, key, value: [(n_head + 2 * n_kv_head) * d_head, n_embd]
    w_o: Linear  # attention output: [n_embd, n_head * d_head]
    ln2: Norm  # before the MLP
    w_in: Linear  # MLP in: [n_ff, n_embd], or for SwiGLU gate and up fused: [2 * n_ff, n_embd]
    w_out: Linear  # MLP out: [n_embd, n_ff]
    ln1_post: Norm | None = None  # after attention, before the residual add (Config.post_norms)
    ln2_post: Norm | None = None  # after the MLP, before the residual add
    q_norm: Norm | None = None  # [d_head] over each query head (Config.qk_norm)
    k_norm: Norm | None = None  # [d_head] over each key head

    __repr__ = short_repr


@dataclass(frozen=True)
class Weights:
    embed: np.ndarray  # [n_vocab, n_embd] token embeddings
    pos_embed: np.ndarray | None  # [n_ctx, n_embd] position embeddings; None with rotary positions
    blocks: tuple[Block, ...]
    ln_final: Norm  # final norm, before the unembedding
    unembed: np.ndarray  # [n_vocab, n_embd] unembedding; the same array as embed when tied

    __repr__ = short_repr


def norm(x: np.ndarray, p: Norm, cfg: Config) -> np.ndarray:
    if cfg.norm == "layernorm":
        return layer_norm(x, p.g, p.b, cfg.norm_eps)
    return rms_norm(x, p.g, cfg.norm_eps)


def mlp(x: np.ndarray, blk: Block, cfg: Config, hook) -> np.ndarray:
    """[n_seq, n_embd] -> [n_seq, n_embd], the hidden layer kept by feature, [n_ff, n_seq] (nn.by_feature: for several
    positions, faster products and activations), which hooks see by position, as its transposed view. One new
    position keeps the matrix-vector products decoding has always run."""
    one = len(x) == 1
    h = linear(x, blk.w_in).T if one else by_feature(x, blk.w_in)  # [n_ff, n_seq] (SwiGLU, GeGLU: [2 * n_ff, ...])
    if cfg.mlp == "gelu":
        h = gelu_new(hook("mlp.pre", h.T).T)
    else:
        h = GATE[cfg.mlp](hook("mlp.pre", h[:cfg.n_ff].T).T) * hook("mlp.pre_linear", h[cfg.n_ff:].T).T  # gate * up
    h = hook("mlp.post", h.T).T
    if one:
        return linear(h.T, blk.w_out)
    return np.ascontiguousarray(by_feature(h.T, blk.w_out).T)  # by position, for the norms' sums after it


def block(x: np.ndarray, blk: Block, cfg: Config, k_buf, v_buf, start: int, rope, hook,
          window: int | None) -> np.ndarray:
    """One pre-norm residual block: x + attention(norm(x)), then + mlp(norm(x)); with post_norms each
    output is normalized again before it is added (Gemma's sandwich)."""
    x = hook("resid_pre", x)  # [n_seq, n_embd]
    attn_out = attention(norm(x, blk.ln1, cfg), blk, cfg, k_buf, v_buf, start, rope, hook, window)
    attn_out = hook("attn_out", post_norm(attn_out, blk.ln1_post, cfg, hook, "ln1_post.in"))
    x = hook("resid_mid", x + attn_out)
    mlp_out = hook("mlp_out", post_norm(mlp(norm(x, blk.ln2, cfg), blk, cfg, hook), blk.ln2_post, cfg, hook,
                                        "ln2_post.in"))
    return hook("resid_post", x + mlp_out)


def post_norm(x: np.ndarray, p: Norm | None, cfg: Config, hook, name: str) -> np.ndarray:
    """A sublayer's output as it joins the residual stream: normalized by `p` with post_norms (the value
    before the norm is the hook point `name`), unchanged otherwise."""
    return norm(hook(name, x), p, cfg) if cfg.post_norms else x


def embed(ids: np.ndarray, weights: Weights, cfg: Config, start: int, hook) -> np.ndarray:
    """Token embeddings, plus learned position embeddings where the model has them: [n_seq, n_embd]."""
    x = weights.embed[ids]  # [n_seq, n_embd]
    if cfg.embed_scale is not None:
        x = x * x.dtype.type(cfg.embed_scale)
    x = hook("embed", x)
    if cfg.positions == "learned":
        x = x + hook("pos_embed", weights.pos_embed[start:start + len(ids)])
    return x


# A long prompt runs in passes of up to CHUNK positions in lanes, PLAIN_CHUNK without (equal parts: `chunk_size`),
# each attending only to the keys before its end: memory holds one pass's activations, and attention goes by
# blocks of queries whose scores stay within attention.SCORES_BUDGET numbers however far the keys grow. Every
# position's logits (`score`) come LOGITS_CHUNK rows at a time: [LOGITS_CHUNK, n_vocab] at once. Longer passes in
# lanes meet fewer times and give the products more rows: passes of up to 2,048 positions, against 512, made
# SmolLM2's prefill of 1,000 to 8,000 tokens 1.05-1.07x as fast, GPT-2 small's of 1,024 1.05x, Gemma 3 270M's of
# 3,000 1.11x; without lanes 0.97x (README, "Long prompts, prompt lookup").
CHUNK, PLAIN_CHUNK, LOGITS_CHUNK = 2048, 512, 512


def forward(ids, weights: Weights, cfg: Config, cache: KVCache | None = None, *, hooks: Hooks | None = None,
            all_logits: bool = False, on_progress=None, chunk: int | None = None,
            states: bool = False) -> tuple[np.ndarray, KVCache]:
    """Run new tokens `ids` after the cached ones: (logits, cache that now includes them).

    Logits are [n_vocab] for the last position, or [n_seq, n_vocab] with all_logits. With `states`, the final
    norm's output [.., n_embd] comes in their place, for a caller that unembeds only some rows (`unembed`).
    `hooks` read or replace named activations (see `hooks.py`); without them nothing is named or copied.
    A long pass runs in chunks (see `forward_chunks`; `on_progress(done, total)` hears as each layer ends).
    It computes in the weights' dtype: float32, or float64 for a reference (see `astype`).
    """
    return gathered(forward_chunks(ids, weights, cfg, cache, hooks=hooks, all_logits=all_logits,
                                   on_progress=on_progress, chunk=chunk, states=states), all_logits)


def gathered(chunks, all_logits: bool) -> tuple[np.ndarray, KVCache]:
    """`forward`'s result from `forward_chunks`' pieces: every chunk's logits, or the last position's."""
    parts = []
    for logits, cache in chunks:
        parts.append(logits)
    return (np.concatenate(parts) if all_logits else parts[-1][-1]), cache


def forward_chunks(ids, weights: Weights, cfg: Config, cache: KVCache | None = None, *, hooks: Hooks | None = None,
                   all_logits: bool = True, on_progress=None, chunk: int | None = None, states: bool = False):
    """`forward` one piece at a time: yields (logits, cache after the pass that computed them), logits
    [n_piece, n_vocab] for each LOGITS_CHUNK positions of a pass (without all_logits, [1, n_vocab] for each
    pass's last position; final states with `states`, as in `forward`, one piece per pass).

    `chunk` caps the positions per pass (default: CHUNK in lanes, else PLAIN_CHUNK); the passes split the
    positions equally (`chunk_size`).
    With hooks the pass is never split, so that hooks see the whole sequence's activations (and patterns) at once.
    """
    cache = cache if cache is not None else KVCache.empty(cfg, weights.embed.dtype)
    ids = checked_ids(ids, cfg, cache.length)
    whole = hooks is not None and bool(hooks.entries)
    report = on_progress if on_progress is not None and not whole else None
    cap = chunk if chunk is not None else CHUNK if lanes.count(cfg, CHUNK, hooks) > 1 else PLAIN_CHUNK
    done, per_pass = 0, chunk_size(len(ids), cap)
    while done < len(ids):
        size = len(ids) - done if whole else min(len(ids) - done, per_pass)
        on_layer = None if report is None else progress(report, done, size, len(ids), cfg.n_layer)
        x, cache = one_pass(ids[done:done + size], weights, cfg, cache, hooks, all_logits, on_layer)
        done += size
        for lo in range(0, len(x), len(x) if states else LOGITS_CHUNK):  # logits: [LOGITS_CHUNK, n_vocab] at most
            yield (x if states else unembed(x[lo:lo + LOGITS_CHUNK], weights)), cache


def chunk_size(n: int, cap: int) -> int:
    """Positions per pass for n new positions in passes of at most `cap`: equal parts, so that no pass is left
    with a few positions (2,100 positions under a cap of 2,048: two passes of 1,050, not 2,048 and 52)."""
    return -(-n // -(-n // cap))


def progress(report, done: int, size: int, total: int, n_layer: int):
    """`on_layer(i)` for one_pass over positions done..done + size of `total`: tells report(done, total) as each
    layer ends, so that a bar moves within a long pass (the first also tells that the prompt began)."""
    if done == 0:
        report(0, total)
    return lambda layer: report(done + size * (layer + 1) // n_layer, total)


def checked_ids(ids, cfg: Config, start: int) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) == 0:
        raise ValueError("forward needs at least one token")
    if start + len(ids) > cfg.n_ctx:
        raise ValueError(f"{start + len(ids)} positions exceed the model's context of {cfg.n_ctx}")
    return ids


def one_pass(ids: np.ndarray, weights: Weights, cfg: Config, cache: KVCache, hooks: Hooks | None,
             all_logits: bool, on_layer=None) -> tuple[np.ndarray, KVCache]:
    """One pass over `ids` after the cached positions: the final norm's output [n_seq, n_embd] (without
    all_logits, [1, n_embd]), new cache. on_layer(i), if given, hears as each layer ends."""
    start, end = cache.length, cache.length + len(ids)
    rope, local_rope = rotary_tables(cfg, start, end, weights.embed.dtype)
    outside = points(hooks, None, start)
    x = embed(ids, weights, cfg, start, outside)  # [n_seq, n_embd]
    threads = lanes.count(cfg, len(ids), hooks)
    if threads > 1:  # a long pass without hooks: every block's steps shared between threads (engine/lanes.py)
        x = lanes.blocks(x, weights, cfg, cache, start, (rope, local_rope), threads, on_layer)
    else:
        for i, blk in enumerate(weights.blocks):
            local = i in cfg.local_layers
            x = block(x, blk, cfg, cache.k[i], cache.v[i], start, local_rope if local else rope,
                      points(hooks, i, start), cfg.sliding_window if local else None)
            if on_layer is not None:
                on_layer(i)
    if not all_logits:
        x = x[-1:]
    return outside("ln_final", norm(x, weights.ln_final, cfg)), dataclasses.replace(cache, length=end)


def unembed(x: np.ndarray, weights: Weights) -> np.ndarray:
    """Logits of final states (the final norm's output): [n_seq, n_embd] -> [n_seq, n_vocab]."""
    return times_transposed(x, weights.unembed)


def astype(weights: Weights, dtype) -> Weights:
    """A copy of every array of `weights` in `dtype`: float64 weights make `forward` a float64 reference."""

    def cast(value):
        if isinstance(value, np.ndarray):
            return value.astype(dtype)
        if isinstance(value, tuple):
            return tuple(cast(v) for v in value)
        if dataclasses.is_dataclass(value):
            return dataclasses.replace(value, **{f.name: cast(getattr(value, f.name)) for f in dataclasses.fields(value)})
        return value

    return cast(weights)
