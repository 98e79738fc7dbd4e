"""Gemma 3's steps of the training forward pass and their backward, beside the shared ones in `layers.py`.

Each is the training twin of a line of the inference pass (engine/model.py, engine/attention.py), chosen by a
Config flag, so GPT-2, Llama and Qwen2 pass through them unchanged:
    embed_scale             x = E[ids] * sqrt(n_embd), in the computing dtype      (model.embed)
    qk_norm                 RMSNorm over each query and key head, before the rotation   (attention.heads_of)
    query_pre_attn_scalar   scores scaled by 1/sqrt(query_pre_attn_scalar), not 1/sqrt(d_head)
    mlp "geglu"             GELU's tanh approximation of the gate half, times the up half   (model.mlp)
    local_layers            a sliding window and their own RoPE base   (layers.attention_forward's `window`)
The post-attention and post-MLP norms ("sandwich") are `net.norm_forward` once more, on the sublayer's output.
Gemma's norm weights are used as the multiplier 1 + w (see engine/arch/gemma3.py): a gradient with respect to
the multiplier is the gradient with respect to Hugging Face's w, since d(1 + w)/dw = 1.
"""

from __future__ import annotations

import numpy as np

from ..model import Config
from . import layers as L


def embed_forward(embed: np.ndarray, ids: np.ndarray, cfg: Config) -> np.ndarray:
    """Token embeddings [batch, n_seq, n_embd], times Gemma's scale rounded to their dtype as model.embed does."""
    x = embed[ids]  # a column-major embedding (Gemma's, see packed.column_major) gathers its rows just as well
    return x * x.dtype.type(cfg.embed_scale) if cfg.embed_scale is not None else x


def embed_backward(dx: np.ndarray, cfg: Config) -> np.ndarray:
    """x = c E[ids]: the rows of E receive c dx (layers.embedding_backward then adds them up by token)."""
    return dx * dx.dtype.type(cfg.embed_scale) if cfg.embed_scale is not None else dx


def query_factor(cfg: Config) -> float | None:
    """The factor that makes attention's 1/sqrt(d_head) the model's 1/sqrt(query_pre_attn_scalar): scaling the
    queries by sqrt(d_head / query_pre_attn_scalar) scales every score by it. None where it is 1."""
    if cfg.query_pre_attn_scalar in (None, cfg.d_head):
        return None
    return float(np.sqrt(cfg.d_head / cfg.query_pre_attn_scalar))


def qk_forward(q: np.ndarray, k: np.ndarray, params: dict, prefix: str, cfg: Config, rope):
    """Queries [batch, n_head, n_seq, d_head] and keys [batch, n_kv_head, ...] as attention takes them: each head
    RMS-normalized (qk_norm), the queries scaled (query_factor), both rotated (rope: cos, sin, or None).
    Returns (q, k, saved)."""
    saved = {}
    if cfg.qk_norm:
        q, saved["q_norm"] = L.rmsnorm_forward(q, params[prefix + "q_norm.g"], cfg.norm_eps)
        k, saved["k_norm"] = L.rmsnorm_forward(k, params[prefix + "k_norm.g"], cfg.norm_eps)
    factor = query_factor(cfg)
    if factor is not None:
        q = q * q.dtype.type(factor)
    if rope is not None:
        q, k = L.rope_forward(q, *rope), L.rope_forward(k, *rope)
    return q, k, saved


def qk_backward(dq: np.ndarray, dk: np.ndarray, saved: dict, params: dict, prefix: str, cfg: Config, rope,
                grads: dict):
    """qk_forward's steps in reverse: the inverse rotation, the same factor, then each norm's backward (its
    weight [d_head] summed over batch, heads and positions). Returns (dq, dk) of the projection's outputs."""
    if rope is not None:
        dq, dk = L.rope_backward(dq, *rope), L.rope_backward(dk, *rope)
    factor = query_factor(cfg)
    if factor is not None:
        dq = dq * dq.dtype.type(factor)
    if cfg.qk_norm:
        dq, grads[prefix + "q_norm.g"] = L.rmsnorm_backward(dq, saved["q_norm"], params[prefix + "q_norm.g"])
        dk, grads[prefix + "k_norm.g"] = L.rmsnorm_backward(dk, saved["k_norm"], params[prefix + "k_norm.g"])
    return dq, dk


def geglu_forward(h: np.ndarray, n_ff: int):
    """GELU(gate) * up, gate and up the two halves of w_in's output, GELU the tanh approximation (Hugging Face's
    gelu_pytorch_tanh, GPT-2's gelu_new): [..., 2 n_ff] -> [..., n_ff]. Saves (GELU's saved, GELU(gate), up)."""
    act, gelu_saved = L.gelu_forward(h[..., :n_ff])
    up = h[..., n_ff:]
    return act * up, (gelu_saved, act, up)


def geglu_backward(dy: np.ndarray, saved) -> np.ndarray:
    """y = GELU(g) u: dg = GELU'(g) (dy u) (gelu_backward), du = dy GELU(g). Returns [..., 2 n_ff], gate first."""
    gelu_saved, act, up = saved
    return np.concatenate([L.gelu_backward(dy * up, gelu_saved), dy * act], axis=-1)


def layer_attention(cfg: Config, ropes: tuple, i: int) -> tuple:
    """Block i's rotary tables and window: a local layer's own RoPE base and sliding window, else the global
    ones and no window (as model.one_pass chooses). `ropes` is attention.rotary_tables' (global, local)."""
    if i in cfg.local_layers:
        return ropes[1], cfg.sliding_window
    return ropes[0], None
