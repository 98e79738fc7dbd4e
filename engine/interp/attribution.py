"""Direct logit attribution: which components wrote the logit (or logit difference) of a token.

The residual stream entering the final norm at a position is a sum of what each component wrote:
the token embedding, the position embedding (learned positions only), every attention head through its
slice of the output matrix, every MLP (with its output bias), and the attention output biases, which belong
to no head. With the final norm's scale frozen at its actual value s for this position, the norm is linear:

    LayerNorm:  N(x) = (x - mean x) / s * g + b      RMSNorm:  N(x) = x / s * g

so the logit of the target, N(x) . u_target, splits exactly into one term per component,
((c - mean c) / s * g) . u (no centring for RMSNorm), plus the norm's own shift b . u ("norm"; LayerNorm
only). With a foil, u is u_target - u_foil and the terms add up to the logit difference. An RMSNorm model
has neither a position embedding in its stream (rotary positions act inside attention, so they are part of
the heads' terms) nor a shift, so it has no `pos_embed` and no `norm` term; a model without output biases
(Llama) has no `bias` term. The terms are computed in float64 from the pass's activations.

Models with sandwich norms (Gemma 3) normalize attention's output again before adding it to the stream
(ln1_post; the MLP's ln2_post likewise). That norm's scale is frozen the same way, at its actual value s_L for
block L's whole attention output at this position, so ln1_post(attn) = attn / s_L * g_L is linear there and
each head's term is its result z_h W_O,h / s_L * g_L, read through the final norm as above; the heads of a
block then add up to exactly what the block's attention wrote. The MLP's term is its output after ln2_post,
as it entered the stream (mlp_out / s * g with its own frozen scale). The embedding term is the embedding as
it enters the stream, times the model's embedding scale (Gemma multiplies by sqrt(n_embd)).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, LlmxError
from ..hooks import Trace
from ..lm import LanguageModel, ignore
from ..model import Norm
from .common import resolve_position, single_token, token_texts


@dataclass(frozen=True)
class TokenRef:
    id: int
    token: str


@dataclass(frozen=True)
class Component:
    name: str  # "embed", "pos_embed", "L{layer}.H{head}", "L{layer}.mlp", "bias" or "norm"
    layer: int | None
    head: int | None
    value: float  # this component's share of the logit (difference)


@dataclass(frozen=True)
class Attribution:
    prompt_tokens: list[str]  # the input tokens (the last n_ctx of a longer text)
    position: int  # the position whose next-token logit is attributed
    target: TokenRef
    foil: TokenRef | None
    total: float  # the real logit of the target (minus the foil's) at `position`, as the model computes it
    components: list[Component]  # in the model's order; their values add up to `total`


def parse_token(lm: LanguageModel, spec: str) -> TokenRef:
    """A token given as text that is exactly one token, or as `#ID`."""
    match = re.fullmatch(r"#(\d+)", spec)
    if match:
        token_id = int(match[1])
        lm.tokenizer.check_ids([token_id])
    else:
        token_id = single_token(lm, spec, "its id as #ID")
    return TokenRef(token_id, lm.token_text(token_id))


def direction(lm: LanguageModel, target: TokenRef, foil: TokenRef | None) -> np.ndarray:
    """The unembedding direction whose dot product with the normed stream is the logit (difference): [n_embd]."""
    u = lm.weights.unembed[target.id].astype(np.float64)
    return u if foil is None else u - lm.weights.unembed[foil.id].astype(np.float64)


def head_results(z: np.ndarray, w_o: np.ndarray, n_head: int) -> np.ndarray:
    """Each head's output through its slice of w_o: z [n_head, d_head] at one position -> [n_head, n_embd]."""
    w = w_o.astype(np.float64).reshape(w_o.shape[0], n_head, -1)  # [n_embd, n_head, d_head]
    return np.einsum("hd,ehd->he", z.astype(np.float64), w)


def stream_terms(lm: LanguageModel, trace: Trace, p: int) -> list[tuple[Component, np.ndarray]]:
    """(component with value 0, what it wrote into the stream at position p [n_embd]) in the model's order."""
    terms = [(Component("embed", None, None, 0.0), trace["embed"][p])]
    if "pos_embed" in trace.acts:
        terms.append((Component("pos_embed", None, None, 0.0), trace["pos_embed"][p]))
    biases = []
    for layer in range(lm.config.n_layer):
        heads, bias = attention_terms(lm, trace, layer, p)
        terms += heads
        terms.append((Component(f"L{layer}.mlp", layer, None, 0.0), trace[f"blocks.{layer}.mlp_out"][p]))
        biases += [] if bias is None else [bias]
    if biases:
        terms.append((Component("bias", None, None, 0.0), np.sum(biases, axis=0)))
    return [(c, np.asarray(v, dtype=np.float64)) for c, v in terms]


def attention_terms(lm: LanguageModel, trace: Trace, layer: int, p: int):
    """Block `layer`'s head terms at position p, [(component, [n_embd])], and what its attention writes that
    belongs to no head (its output bias; a post-norm's shift), or None. With post-norms each head's result
    passes the post-norm with its scale frozen at the value for the block's attention output (see the module)."""
    cfg, blk = lm.config, lm.weights.blocks[layer]
    results = head_results(trace[f"blocks.{layer}.attn.z"][p], blk.w_o.w, cfg.n_head)  # [n_head, n_embd]
    post, shift = (lambda c: c), None
    if cfg.post_norms:
        post, shift = frozen(trace[f"blocks.{layer}.ln1_post.in"][p], blk.ln1_post, cfg)
    heads = [(Component(f"L{layer}.H{h}", layer, h, 0.0), r) for h, r in enumerate(post(results))]
    bias = None if blk.w_o.b is None else post(blk.w_o.b.astype(np.float64))
    rest = [v for v in (bias, shift) if v is not None]
    return heads, (np.sum(rest, axis=0) if rest else None)


def frozen(x: np.ndarray, p: Norm, cfg) -> tuple:
    """Norm `p` as a linear map with its scale frozen at its value for x [n_embd]: (map over the last axis,
    shift or None). LayerNorm: c -> (c - mean c) / s * g, shift b; RMSNorm: c -> c / s * g."""
    x, g = x.astype(np.float64), p.g.astype(np.float64)
    if cfg.norm == "layernorm":
        s = np.sqrt(((x - x.mean()) ** 2).mean() + cfg.norm_eps)
        return (lambda c: (c - c.mean(axis=-1, keepdims=True)) / s * g), p.b.astype(np.float64)
    s = np.sqrt((x * x).mean() + cfg.norm_eps)
    return (lambda c: c / s * g), None


def frozen_norm(stream: np.ndarray, lm: LanguageModel):
    """The final norm as a linear map with its scale frozen at its value for `stream` [n_embd]: (map, shift)."""
    return frozen(stream, lm.weights.ln_final, lm.config)


def check_decomposition(terms, stream: np.ndarray) -> None:
    """The terms must add up to the stream the pass computed: an architecture that writes into the stream
    in a way these terms do not describe is an error, not a wrong attribution."""
    total = np.sum([v for _, v in terms], axis=0)
    error = np.abs(total - stream).max() / max(np.abs(stream).max(), 1e-30)
    if error > 1e-3:
        raise LlmxError(f"this model's residual stream is not the sum of its embeddings, heads, MLPs and biases "
                        f"(off by {error:.1e} of its size), so direct logit attribution does not apply to it")


def attribute(lm: LanguageModel, ids: list[int], target: TokenRef, foil: TokenRef | None = None,
              position: int = -1, on_notice=ignore) -> Attribution:
    """Direct logit attribution of the target's logit (minus the foil's) after `position` (see the module)."""
    ids = lm.fit(ids, on_notice)
    p = resolve_position(position, len(ids))
    if foil is not None and foil.id == target.id:
        raise InputError(f"the target and the foil are the same token ({target.token!r}): give two different tokens")
    last = lm.config.n_layer - 1
    trace = Trace(("embed", "pos_embed", "blocks.*.attn.z", "blocks.*.ln1_post.in", "blocks.*.mlp_out",
                   f"blocks.{last}.resid_post"))
    last_position = p == len(ids) - 1  # then the very computation `predict` runs: its logits, bit for bit
    logits, _ = lm.forward(ids, hooks=trace, all_logits=not last_position)
    logits = logits if last_position else logits[p]  # [n_vocab]
    stream = trace[f"blocks.{last}.resid_post"][p].astype(np.float64)
    terms = stream_terms(lm, trace, p)
    check_decomposition(terms, stream)
    normed, shift = frozen_norm(stream, lm)
    u = direction(lm, target, foil)
    components = [Component(c.name, c.layer, c.head, float(normed(v) @ u)) for c, v in terms]
    if shift is not None:
        components.append(Component("norm", None, None, float(shift @ u)))
    total = float(logits[target.id]) - (0.0 if foil is None else float(logits[foil.id]))
    return Attribution(prompt_tokens=token_texts(lm, ids), position=p, target=target, foil=foil, total=total,
                       components=components)


def accumulated(attribution: Attribution, n_layer: int) -> list[float]:
    """The logit (difference) read after the embeddings and after each block, scale frozen: a logit lens of the
    direction. Terms of no layer (embeddings, biases, norm) count from the start; the last value is the total."""
    values = [sum(c.value for c in attribution.components if c.layer is None)]
    for layer in range(n_layer):
        values.append(values[-1] + sum(c.value for c in attribution.components if c.layer == layer))
    return values
