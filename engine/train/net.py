"""The training forward pass, which keeps every activation the backward pass needs, and that backward pass.

Parameters are a flat dict of arrays with the engine's names (`embed`, `blocks.0.w_qkv.w`, `blocks.0.ln1.g`,
`blocks.0.q_norm.g`, `ln_final.b`, ...; see `params.py`), so an optimizer can walk them; the frozen inference
`Weights` stay as they are and `model.forward` stays as fast as it is. LoRA adapters (see `lora.py`) are parameters too,
`blocks.0.w_qkv.lora.q_proj.A` and `.B`, added to slices of a linear layer's output rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..attention import rotary_tables
from ..model import Config
from . import gemma as G
from . import layers as L
from .head import HeadGrads, head_forward


@dataclass(frozen=True)
class Lora:
    """Low-rank adapters: W x + (alpha / rank) B A x on each slice of rows a Hugging Face module owns."""

    rank: int
    alpha: float
    # linear stem ("blocks.3.w_qkv") -> ((module name, first row, end row, Hugging Face module path), ...),
    # e.g. ("q_proj", 0, 576, "model.layers.3.self_attn.q_proj")
    slices: dict = field(default_factory=dict)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def dense_forward(x, params: dict, stem: str, lora: Lora | None):
    """A linear layer plus its LoRA slices: y[..., lo:hi] += (scale x A^T) B^T. Saves (x, [scale x A^T, ...]):
    the scale multiplies the narrow [..., rank] product, not the [..., hi - lo] one, in both passes."""
    y = L.linear_forward(x, params[f"{stem}.w"], params.get(f"{stem}.b"))
    low = []
    for name, lo, hi, _ in (lora.slices.get(stem, ()) if lora else ()):
        xa = x @ params[f"{stem}.lora.{name}.A"].T  # [..., in] -> [..., rank]
        xa *= x.dtype.type(lora.scale)
        y[..., lo:hi] += xa @ params[f"{stem}.lora.{name}.B"].T
        low.append(xa)
    return y, (x, low)


def dense_backward(dy, saved, params: dict, stem: str, lora: Lora | None, grads: dict, trainable) -> np.ndarray:
    """dx of a linear layer with its adapters; adds dW, db, dA, dB to `grads` for the trainable ones."""
    x, low = saved
    w = params[f"{stem}.w"]
    dx, dw, db = L.linear_backward(dy, x, w, want_w=f"{stem}.w" in trainable)
    if dw is not None:
        grads[f"{stem}.w"] = dw
        if f"{stem}.b" in params:
            grads[f"{stem}.b"] = db
    for (name, lo, hi, _), xa in zip(lora.slices.get(stem, ()) if lora else (), low):
        a, b = params[f"{stem}.lora.{name}.A"], params[f"{stem}.lora.{name}.B"]
        dxa, db_lora, _ = L.linear_backward(dy[..., lo:hi], xa, b)  # through B: [..., out] -> [..., rank]
        dxa *= dxa.dtype.type(lora.scale)  # xa = scale x A^T
        dx_lora, da, _ = L.linear_backward(dxa, x, a)  # through A: [..., rank] -> [..., in]
        dx += dx_lora
        grads[f"{stem}.lora.{name}.A"], grads[f"{stem}.lora.{name}.B"] = da, db_lora
    return dx


def norm_forward(x, params: dict, stem: str, cfg: Config):
    if cfg.norm == "layernorm":
        return L.layernorm_forward(x, params[f"{stem}.g"], params[f"{stem}.b"], cfg.norm_eps)
    return L.rmsnorm_forward(x, params[f"{stem}.g"], cfg.norm_eps)


def norm_backward(dy, saved, params: dict, stem: str, cfg: Config, grads: dict) -> np.ndarray:
    if cfg.norm == "layernorm":
        dx, grads[f"{stem}.g"], grads[f"{stem}.b"] = L.layernorm_backward(dy, saved, params[f"{stem}.g"])
    else:
        dx, grads[f"{stem}.g"] = L.rmsnorm_backward(dy, saved, params[f"{stem}.g"])
    return dx


def split_heads(fused: np.ndarray, cfg: Config):
    """[batch, n_seq, (n_head + 2 n_kv_head) d_head] -> q [batch, n_head, n_seq, d_head], k, v [.., n_kv_head, ..]."""
    batch, n_seq, _ = fused.shape
    n_q, n_kv = cfg.n_head * cfg.d_head, cfg.n_kv_head * cfg.d_head

    def heads(part, n):
        return part.reshape(batch, n_seq, n, cfg.d_head).transpose(0, 2, 1, 3)

    return (heads(fused[..., :n_q], cfg.n_head), heads(fused[..., n_q:n_q + n_kv], cfg.n_kv_head),
            heads(fused[..., n_q + n_kv:], cfg.n_kv_head))


def merge_heads(*parts: np.ndarray) -> np.ndarray:
    """The inverse of split_heads (or of one head group): [batch, n, n_seq, d_head] ... -> [batch, n_seq, width]."""
    return np.concatenate([p.transpose(0, 2, 1, 3).reshape(p.shape[0], p.shape[2], -1) for p in parts], axis=-1)


def block_forward(x, params: dict, i: int, cfg: Config, rope, window, lora):
    """One pre-norm block, as model.block, keeping what its backward needs: (x_out, saved dict). Gemma's steps
    (qk norms, query scale, window, post norms, GeGLU) are in gemma.py."""
    s, p = {}, f"blocks.{i}."
    h, s["ln1"] = norm_forward(x, params, p + "ln1", cfg)
    fused, s["w_qkv"] = dense_forward(h, params, p + "w_qkv", lora)
    q, k, v = split_heads(fused, cfg)
    q, k, s["qk"] = G.qk_forward(q, k, params, p, cfg, rope)
    z, s["attn"] = L.attention_forward(q, k, v, window)
    attn_out, s["w_o"] = dense_forward(merge_heads(z), params, p + "w_o", lora)
    attn_out, s["ln1_post"] = post_norm_forward(attn_out, params, p + "ln1_post", cfg)
    x = x + attn_out
    h, s["ln2"] = norm_forward(x, params, p + "ln2", cfg)
    pre, s["w_in"] = dense_forward(h, params, p + "w_in", lora)
    act, s["act"] = ACTIVATIONS[cfg.mlp][0](pre, cfg.n_ff)
    mlp_out, s["w_out"] = dense_forward(act, params, p + "w_out", lora)
    mlp_out, s["ln2_post"] = post_norm_forward(mlp_out, params, p + "ln2_post", cfg)
    return x + mlp_out, s


def block_backward(dx, s: dict, params: dict, i: int, cfg: Config, rope, lora, grads: dict, trainable):
    """The gradient flows through both residual branches and along the residual stream itself."""
    p = f"blocks.{i}."
    d_mlp = post_norm_backward(dx, s["ln2_post"], params, p + "ln2_post", cfg, grads)
    d_act = dense_backward(d_mlp, s["w_out"], params, p + "w_out", lora, grads, trainable)
    d_pre = ACTIVATIONS[cfg.mlp][1](d_act, s["act"])
    dh = dense_backward(d_pre, s["w_in"], params, p + "w_in", lora, grads, trainable)
    dx = dx + norm_backward(dh, s["ln2"], params, p + "ln2", cfg, grads)
    d_attn = post_norm_backward(dx, s["ln1_post"], params, p + "ln1_post", cfg, grads)
    dz = dense_backward(d_attn, s["w_o"], params, p + "w_o", lora, grads, trainable)
    batch, n_seq = dx.shape[:2]
    dq, dk, dv = L.attention_backward(dz.reshape(batch, n_seq, cfg.n_head, cfg.d_head).transpose(0, 2, 1, 3),
                                      s["attn"])
    dq, dk = G.qk_backward(dq, dk, s["qk"], params, p, cfg, rope, grads)
    dh = dense_backward(merge_heads(dq, dk, dv), s["w_qkv"], params, p + "w_qkv", lora, grads, trainable)
    return dx + norm_backward(dh, s["ln1"], params, p + "ln1", cfg, grads)


# The MLP's activation by Config.mlp: (forward (h, n_ff) -> (y, saved), backward (dy, saved) -> dh)
ACTIVATIONS = {"gelu": (lambda h, n_ff: L.gelu_forward(h), L.gelu_backward),
               "swiglu": (L.swiglu_forward, L.swiglu_backward), "geglu": (G.geglu_forward, G.geglu_backward)}


def post_norm_forward(x, params: dict, stem: str, cfg: Config):
    """A sublayer's output normalized once more before the residual add (Gemma's sandwich), else unchanged."""
    return norm_forward(x, params, stem, cfg) if cfg.post_norms else (x, None)


def post_norm_backward(dy, saved, params: dict, stem: str, cfg: Config, grads: dict):
    """Through post_norm_forward: the norm's backward with post_norms, else the gradient as it is."""
    return norm_backward(dy, saved, params, stem, cfg, grads) if cfg.post_norms else dy


@dataclass
class Tape:
    """What the training forward saved for the backward pass."""

    ids: np.ndarray  # [batch, n_seq]
    ropes: tuple  # (global, local) rotary tables, each cos, sin [n_seq, d_head] (attention.rotary_tables), or Nones
    blocks: list  # each block's saved activations
    ln_final: tuple
    head: HeadGrads | None = None  # the loss head's gradients, computed with the loss (see head.py)


def unembed_matrix(params: dict) -> np.ndarray:
    return params["unembed"] if "unembed" in params else params["embed"]  # tied: the embedding itself


def train_forward(params: dict, cfg: Config, ids, targets, mask, lora: Lora | None = None,
                  trainable=()) -> tuple[float, Tape]:
    """Mean cross-entropy of predicting `targets` [batch, n_seq] after `ids`, over positions where `mask` is 1.
    `trainable` names the parameters train_backward will want: with none (a validation loss) the tape has no
    gradient of the head, and train_backward cannot run on it."""
    x, tape = hidden_forward(params, cfg, ids, lora)
    trainable = set(trainable)
    loss, tape.head = head_forward(x, unembed_matrix(params), targets, mask, grad=bool(trainable),
                                   grad_unembed=bool({"embed", "unembed"} & trainable))
    return loss, tape


def logits_forward(params: dict, cfg: Config, ids, lora: Lora | None = None) -> tuple[np.ndarray, Tape]:
    """Logits [batch, n_seq, n_vocab] of every position, and the tape of activations that led to them."""
    x, tape = hidden_forward(params, cfg, ids, lora)
    return x @ unembed_matrix(params).T, tape  # [batch, n_seq, n_embd] -> [batch, n_seq, n_vocab]


def hidden_forward(params: dict, cfg: Config, ids, lora: Lora | None = None) -> tuple[np.ndarray, Tape]:
    """The final norm's output [batch, n_seq, n_embd], and the tape of activations that led to it."""
    ids = np.asarray(ids)
    n_seq = ids.shape[1]
    ropes = rotary_tables(cfg, 0, n_seq, params["embed"].dtype)
    x = G.embed_forward(params["embed"], ids, cfg)  # [batch, n_seq, n_embd]
    if cfg.positions == "learned":
        x = x + params["pos_embed"][:n_seq]
    saved = []
    for i in range(cfg.n_layer):
        x, s = block_forward(x, params, i, cfg, *G.layer_attention(cfg, ropes, i), lora)
        saved.append(s)
    x, ln = norm_forward(x, params, "ln_final", cfg)
    return x, Tape(ids, ropes, saved, ln)


def train_backward(tape: Tape, params: dict, cfg: Config, trainable, lora: Lora | None = None) -> dict:
    """The gradient of the loss with respect to every parameter named in `trainable`: {name: array}."""
    if tape.head is None:
        raise ValueError("train_forward was given no trainable parameters, so its tape has no gradient to go on")
    grads: dict = {}
    d_unembed = tape.head.d_unembed
    dx = norm_backward(tape.head.d_x, tape.ln_final, params, "ln_final", cfg, grads)
    for i in reversed(range(cfg.n_layer)):  # each block's activations are dropped once used: memory falls as it goes
        rope, _ = G.layer_attention(cfg, tape.ropes, i)
        dx = block_backward(dx, tape.blocks.pop(), params, i, cfg, rope, lora, grads, trainable)
    if "pos_embed" in trainable:
        grads["pos_embed"] = np.zeros_like(params["pos_embed"])
        grads["pos_embed"][:dx.shape[1]] = dx.sum(axis=0)
    if "embed" in trainable:
        tied = "unembed" not in params  # the matrix is used twice, so its gradient is the sum of both uses
        grads["embed"] = L.embedding_backward(G.embed_backward(dx, cfg), tape.ids, cfg.n_vocab,
                                              into=d_unembed if tied else None)
    if "unembed" in params and "unembed" in trainable:
        grads["unembed"] = d_unembed
    return {name: g for name, g in grads.items() if name in trainable}
