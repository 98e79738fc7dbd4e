"""One prediction, step by step: the numbers behind a next-token prediction, following the last position."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..hooks import Trace
from ..lm import LanguageModel, Prediction, ignore
from ..nn import log_softmax
from .common import is_tied, token_texts


@dataclass(frozen=True)
class TokenStep:
    position: int
    id: int
    token: str
    embedding: list[float]  # the first few numbers of the token's embedding
    embedding_norm: float  # length of the whole embedding vector
    position_norm: float | None  # length of the learned position vector; None with rotary positions


@dataclass(frozen=True)
class HeadFocus:
    head: int
    position: int  # the earlier (or same) position the last token attends to most
    token: str
    weight: float  # the attention weight there, 0..1


@dataclass(frozen=True)
class BlockStep:
    layer: int
    heads: list[HeadFocus]  # per head, from the last position
    attn_norm: float  # length of what attention adds to the last position's stream
    mlp_norm: float  # length of what the MLP adds
    resid_norm: float  # length of the stream after the block


@dataclass(frozen=True)
class Explanation:
    arch: str  # "gpt2" or "llama"
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_kv_head: int
    norm: str  # "layernorm" or "rmsnorm"
    mlp: str  # "gelu" or "swiglu"
    positions: str  # "learned" (added to the embeddings) or "rotary" (applied to queries and keys)
    tied: bool  # unembedding = embedding matrix
    post_norms: bool  # attention's and the MLP's results normalized again before they are added (Gemma)
    sliding_window: int | None  # tokens a local block attends to (Gemma 3); None: every block sees everything
    local_layers: list[int]  # the blocks that attend only to the sliding window
    tokens: list[TokenStep]
    input_norm: float  # length of the last position's stream entering block 0
    blocks: list[BlockStep]
    final_norm: float  # length of the last position's stream after the final norm
    entropy: float  # of the next-token distribution, in bits
    top: list[Prediction]  # the same as `predict`


def explain(lm: LanguageModel, ids: list[int], top: int = 5, dims: int = 4, on_notice=ignore) -> Explanation:
    """The numbers behind one next-token prediction, following the last position through the model
    (the last n_ctx tokens of a text longer than the context: see context.py)."""
    ids = lm.fit(ids, on_notice)
    cfg = lm.config
    trace = Trace(("embed", "pos_embed", "blocks.0.resid_pre", "blocks.*.attn.pattern", "blocks.*.attn_out",
                   "blocks.*.mlp_out", "blocks.*.resid_post", "ln_final"))
    logits, _ = lm.forward(ids, hooks=trace)
    texts = token_texts(lm, ids)
    embed = trace["embed"]
    pos = trace.acts.get("pos_embed")
    tokens = [TokenStep(p, int(i), texts[p], embed[p, :dims].tolist(), float(np.linalg.norm(embed[p])),
                        None if pos is None else float(np.linalg.norm(pos[p]))) for p, i in enumerate(ids)]
    blocks = []
    for layer in range(cfg.n_layer):
        last_row = trace[f"blocks.{layer}.attn.pattern"][:, -1]  # [head, src] from the last position
        focus = last_row.argmax(-1)
        heads = [HeadFocus(h, int(s), texts[s], float(last_row[h, s])) for h, s in enumerate(focus)]
        blocks.append(BlockStep(layer, heads, *(float(np.linalg.norm(trace[f"blocks.{layer}.{name}"][-1]))
                                                for name in ("attn_out", "mlp_out", "resid_post"))))
    log_probs = log_softmax(logits.astype(np.float64))
    return Explanation(arch=cfg.arch, n_vocab=cfg.n_vocab, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                       n_head=cfg.n_head, n_kv_head=cfg.n_kv_head, norm=cfg.norm, mlp=cfg.mlp,
                       positions=cfg.positions, tied=is_tied(lm), post_norms=cfg.post_norms,
                       sliding_window=cfg.sliding_window if cfg.local_layers else None,
                       local_layers=list(cfg.local_layers), tokens=tokens,
                       input_norm=float(np.linalg.norm(trace["blocks.0.resid_pre"][-1])), blocks=blocks,
                       final_norm=float(np.linalg.norm(trace["ln_final"][-1])),
                       entropy=float(-(np.exp(log_probs) * log_probs).sum() / np.log(2)),
                       top=lm.top_predictions(logits, top))
