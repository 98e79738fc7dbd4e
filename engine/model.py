"""The transformer forward pass: GPT-2 and Llama as one pre-norm residual stack with a KV cache.

The two architectures differ in three places, each chosen by a field of `Config`:
the norm (LayerNorm or RMSNorm), where positions enter (learned embeddings or rotary
rotation of queries and keys) and the MLP (GELU or SwiGLU). Everything else is shared.

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

from .hooks import Hooks, points
from .nn import apply_rope, gelu_new, layer_norm, rms_norm, rope_tables, silu, softmax


@dataclass(frozen=True)
class Config:
    arch: str  # the architecture's registry name (engine/arch/: "gpt2", "llama", "qwen2"), for people only
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
    mlp: str  # "gelu" (one matrix in, GELU) or "swiglu" (gate and up matrices, SiLU(gate) * up)
    d_head: int  # width of one attention head (n_embd // n_head in GPT-2 and Llama)
    rope_theta: float | None = None  # base of the rotary frequencies; None with learned positions
    qkv_bias: bool = False  # whether w_qkv has a bias (GPT-2 and Qwen2: yes; Llama: no)
    tied: bool = False  # whether unembed is embed (GPT-2, and many small models); else a matrix of its own


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

    __repr__ = short_repr


@dataclass(frozen=True)
class Weights:
    embed: np.ndarray  # [n_vocab, n_embd] token embeddings
    pos_embed: np.ndarray | None  # [n_ctx, n_embd] position embeddings; None with rotary positions
    blocks: tuple[Block, ...]
    ln_final: Norm  # final norm, before the unembedding
    unembed: np.ndarray  # [n_vocab, n_embd] unembedding; the same array as embed when tied

    __repr__ = short_repr


@dataclass(frozen=True)
class KVCache:
    """Keys and values of every position seen so far, in buffers allocated once for the whole context.

    A forward pass writes positions [length, length + n) and returns a cache with the new length;
    the old value still describes its own prefix, so a prefix can be reused.
    """

    k: tuple[np.ndarray, ...]  # per layer [n_kv_head, n_ctx, d_head]
    v: tuple[np.ndarray, ...]
    length: int = 0

    @classmethod
    def empty(cls, cfg: Config, dtype=np.float32) -> KVCache:
        shape = (cfg.n_kv_head, cfg.n_ctx, cfg.d_head)
        # np.zeros takes pages from the OS lazily: only positions used cost memory.
        return cls(tuple(np.zeros(shape, dtype) for _ in range(cfg.n_layer)),
                   tuple(np.zeros(shape, dtype) for _ in range(cfg.n_layer)))


def linear(x: np.ndarray, p: Linear) -> np.ndarray:
    y = x @ p.w.T  # [n_seq, in] -> [n_seq, out]
    if p.b is not None:
        y += p.b
    return y


def norm(x: np.ndarray, p: Norm, cfg: Config) -> np.ndarray:
    if cfg.norm == "layernorm":
        return layer_norm(x, p.g, p.b, cfg.norm_eps)
    return rms_norm(x, p.g, cfg.norm_eps)


def heads(hook, name: str, x: np.ndarray) -> np.ndarray:
    """Hook point for per-head values kept [head, n_seq, d_head]: hooks see TransformerLens' [pos, head, d_head]."""
    return hook(name, x.transpose(1, 0, 2)).transpose(1, 0, 2)


def qkv(x: np.ndarray, blk: Block, cfg: Config, rope, hook) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Queries [n_head, n_seq, d_head], keys and values [n_kv_head, n_seq, d_head] of the new positions."""
    n_seq, d_head = x.shape[0], cfg.d_head
    n_q, n_kv = cfg.n_head * d_head, cfg.n_kv_head * d_head
    fused = linear(x, blk.w_qkv)  # [n_seq, n_embd] -> [n_seq, n_q + 2 * n_kv]
    q = fused[:, :n_q].reshape(n_seq, cfg.n_head, d_head).transpose(1, 0, 2)  # [n_head, n_seq, d_head]
    k = fused[:, n_q:n_q + n_kv].reshape(n_seq, cfg.n_kv_head, d_head).transpose(1, 0, 2)  # [n_kv_head, ...]
    v = fused[:, n_q + n_kv:].reshape(n_seq, cfg.n_kv_head, d_head).transpose(1, 0, 2)
    if rope is not None:  # rotary positions: rotate queries and keys by their positions' angles
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    return heads(hook, "attn.q", q), heads(hook, "attn.k", k), heads(hook, "attn.v", v)


def attention(x, blk: Block, cfg: Config, k_buf, v_buf, start: int, rope, hook) -> np.ndarray:
    """Causal multi-head attention over the cached positions and the new ones; heads batched."""
    q, k, v = qkv(x, blk, cfg, rope, hook)
    n_seq, end = x.shape[0], start + x.shape[0]
    k_buf[:, start:end] = k
    v_buf[:, start:end] = v
    keys, values = k_buf[:, None, :end], v_buf[:, None, :end]  # [n_kv_head, 1, n_ctx_used, d_head]
    group = cfg.n_head // cfg.n_kv_head  # query heads sharing one key/value head
    q = q.reshape(cfg.n_kv_head, group, n_seq, cfg.d_head)
    scores = q @ keys.transpose(0, 1, 3, 2)  # [n_kv_head, group, n_seq, n_ctx_used]
    scores *= scores.dtype.type(1.0 / np.sqrt(cfg.d_head))
    if n_seq > 1:  # a new position may look at itself and the past, never the future
        scores += np.triu(np.full((n_seq, end), -np.inf, scores.dtype), k=start + 1)  # [n_seq, n_ctx_used]
    pattern = softmax(scores).reshape(cfg.n_head, n_seq, end)  # [head, dest, src]
    pattern = hook("attn.pattern", pattern).reshape(cfg.n_kv_head, group, n_seq, end)
    z = pattern @ values  # [n_kv_head, group, n_seq, d_head]
    z = hook("attn.z", z.reshape(cfg.n_head, n_seq, cfg.d_head).transpose(1, 0, 2))  # [n_seq, n_head, d_head]
    return attention_output(z, blk.w_o, cfg, hook)


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


def mlp(x: np.ndarray, blk: Block, cfg: Config, hook) -> np.ndarray:
    h = linear(x, blk.w_in)  # [n_seq, n_embd] -> [n_seq, n_ff] (or [n_seq, 2 * n_ff] for SwiGLU)
    if cfg.mlp == "gelu":
        h = gelu_new(hook("mlp.pre", h))
    else:
        h = silu(hook("mlp.pre", h[:, :cfg.n_ff])) * hook("mlp.pre_linear", h[:, cfg.n_ff:])  # gate * up
    h = hook("mlp.post", h)
    return linear(h, blk.w_out)  # [n_seq, n_embd]


def block(x: np.ndarray, blk: Block, cfg: Config, k_buf, v_buf, start: int, rope, hook) -> np.ndarray:
    """One pre-norm residual block: x + attention(norm(x)), then + mlp(norm(x))."""
    x = hook("resid_pre", x)  # [n_seq, n_embd]
    attn_out = hook("attn_out", attention(norm(x, blk.ln1, cfg), blk, cfg, k_buf, v_buf, start, rope, hook))
    x = hook("resid_mid", x + attn_out)
    mlp_out = hook("mlp_out", mlp(norm(x, blk.ln2, cfg), blk, cfg, hook))
    return hook("resid_post", x + mlp_out)


def embed(ids: np.ndarray, weights: Weights, cfg: Config, start: int, hook) -> np.ndarray:
    """Token embeddings, plus learned position embeddings where the model has them: [n_seq, n_embd]."""
    x = hook("embed", weights.embed[ids])  # [n_seq, n_embd]
    if cfg.positions == "learned":
        x = x + hook("pos_embed", weights.pos_embed[start:start + len(ids)])
    return x


def forward(ids, weights: Weights, cfg: Config, cache: KVCache | None = None, *,
            hooks: Hooks | None = None, all_logits: bool = False) -> tuple[np.ndarray, KVCache]:
    """Run new tokens `ids` after the cached ones: (logits, cache that now includes them).

    Logits are [n_vocab] for the last position, or [n_seq, n_vocab] with all_logits.
    `hooks` read or replace named activations (see `hooks.py`); without them nothing is named or copied.
    It computes in the weights' dtype: float32, or float64 for a reference (see `astype`).
    """
    dtype = weights.embed.dtype
    cache = cache if cache is not None else KVCache.empty(cfg, dtype)
    ids = np.asarray(ids, dtype=np.int64)
    start, end = cache.length, cache.length + len(ids)
    if len(ids) == 0:
        raise ValueError("forward needs at least one token")
    if end > cfg.n_ctx:
        raise ValueError(f"{end} positions exceed the model's context of {cfg.n_ctx}")
    # cos and sin of the new positions' rotary angles, shared by every block; None with learned positions
    rotary = cfg.positions == "rotary"
    rope = rope_tables(np.arange(start, end), cfg.d_head, cfg.rope_theta, dtype) if rotary else None

    outside = points(hooks, None, start)
    x = embed(ids, weights, cfg, start, outside)  # [n_seq, n_embd]
    for i, blk in enumerate(weights.blocks):
        x = block(x, blk, cfg, cache.k[i], cache.v[i], start, rope, points(hooks, i, start))
    if not all_logits:
        x = x[-1:]
    x = outside("ln_final", norm(x, weights.ln_final, cfg))
    logits = x @ weights.unembed.T  # [n_seq, n_embd] -> [n_seq, n_vocab]
    return (logits if all_logits else logits[0]), dataclasses.replace(cache, length=end)


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
