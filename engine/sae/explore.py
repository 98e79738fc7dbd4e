"""Exploring an SAE's latents on its model: which fire on each token, one latent's card, steering with one.

Activations are read by a hook at the SAE's hook point (the pass stops there) and encoded by
`SparseAutoencoder.encode`; text starts with the model's start token when the SAE was trained that way
(SAELens' prepend_bos, its default).

Position 0 is the model's attention sink (the start token, or the first token of a text without one): its
residual stream is some hundred times larger than the others', so an SAE, which never saw it in training
(`llmx sae train` leaves it out, as SAELens' dashboards and Neuronpedia leave out the start token), gives it
huge activations that mean nothing. `features` lists no latents there unless asked, and scans leave it out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..hooks import Hooks, Site
from ..lm import LanguageModel, ignore
from ..sampling import Sampling
from ..interp.common import token_texts
from ..interp.steering import Continuation, steered_and_plain, with_start
from .saelens import LoadedSae

SCAN_CHUNK = 128  # tokens per forward pass when scanning a file (fewer when the model's context is shorter)
WINDOW = (12, 4)  # tokens shown before and after the activating one in a scanned context
N_TOP, N_TOP_SCAN, N_BINS = 10, 50, 20  # contexts shown by default, kept when scanning; histogram bins


@dataclass(frozen=True)
class FeatureAct:
    id: int  # the latent
    act: float  # its activation on the token


@dataclass(frozen=True)
class TokenFeatures:
    index: int  # position in the text (0: the start token, when the SAE expects one)
    id: int  # the token's id
    text: str
    features: list[FeatureAct]  # the most active latents, strongest first (only those > 0)


@dataclass(frozen=True)
class Features:
    sae: str  # the SAE as the user named it
    sink_left_out: bool  # whether position 0's latents are left out (the attention sink; see the module)
    tokens: list[TokenFeatures]


def check_feature(loaded: LoadedSae, feature: int) -> None:
    if not 0 <= feature < loaded.sae.d_sae:
        raise InputError(f"feature {feature} does not exist: this SAE has latents 0..{loaded.sae.d_sae - 1}")


def text_ids(lm: LanguageModel, loaded: LoadedSae, text: str, on_notice=ignore) -> list[int]:
    """The tokens the SAE reads for `text`: after the start token if it was trained so, cut to the context."""
    ids = lm.prompt_ids(text)
    return lm.fit(with_start(lm, ids) if loaded.prepend_bos else ids, on_notice)


class Captured(Exception):
    """Raised by the hook that read the SAE's activation: the blocks after it need not run."""


def activations(lm: LanguageModel, loaded: LoadedSae, ids: list[int]) -> np.ndarray:
    """The SAE's latents at every position of `ids`: [n_seq, d_sae]. The forward pass stops at the SAE's hook
    (TransformerLens' stop_at_layer), so an SAE on a middle layer costs half a pass."""
    seen = []

    def grab(value: np.ndarray, site: Site) -> None:
        seen.append(value.reshape(len(value), -1))  # attn.z: [n_seq, n_head * d_head]
        raise Captured

    try:
        lm.forward(ids, hooks=Hooks([(loaded.site, grab)]))
    except Captured:
        pass
    return loaded.sae.encode(seen[0])


def features(lm: LanguageModel, loaded: LoadedSae, text: str, top: int = 5, sink: bool = False,
             on_notice=ignore) -> Features:
    """For each token of `text`, its `top` most active latents (ties: the lower id first); none at position 0,
    the attention sink, unless `sink` (see the module)."""
    ids = text_ids(lm, loaded, text, on_notice)
    acts = activations(lm, loaded, ids)
    rows = []
    for i, (token_id, row) in enumerate(zip(ids, acts)):
        best = np.argsort(-row, kind="stable")[:top] if i or sink else []
        rows.append(TokenFeatures(i, int(token_id), lm.token_text(int(token_id)),
                                  [FeatureAct(int(f), float(row[f])) for f in best if row[f] > 0]))
    return Features(sae=loaded.ref, sink_left_out=not sink, tokens=rows)


@dataclass(frozen=True)
class Context:
    act: float  # the latent's activation on the highlighted token
    ids: list[int]  # a window of tokens around it
    tokens: list[str]
    center: int  # index in `tokens` of the activating token


@dataclass(frozen=True)
class OutputToken:
    id: int
    token: str
    value: float  # the latent's direct effect on this token's logit, per unit of activation


@dataclass(frozen=True)
class Histogram:
    edges: list[float]  # n_bins + 1 bin edges over the latent's nonzero activations
    counts: list[int]


@dataclass(frozen=True)
class FeatureCard:
    sae: str
    hook: str  # llmx's hook name the SAE reads
    feature: int
    d_sae: int
    source: str  # where contexts and density come from: "index", "data" (a scanned file) or "none"
    tokens: int  # tokens scanned for them (0 with "none")
    density: float | None  # fraction of those tokens where the latent is > 0 (or from sparsity.safetensors)
    contexts: list[Context]  # top-activating, strongest first
    positive: list[OutputToken]  # tokens whose logits the latent's decoder direction raises most
    negative: list[OutputToken]  # ... and lowers most (both empty for SAEs off the residual stream)
    histogram: Histogram | None


def output_tokens(lm: LanguageModel, direction: np.ndarray, top: int) -> tuple[list[OutputToken], list[OutputToken]]:
    """The tokens a residual-stream direction raises and lowers most, as TransformerLens reads them with
    fold_ln (what SAE dashboards and Neuronpedia show): the final norm's scale folded into the unembedding
    and, for LayerNorm, the direction's mean removed; not divided by the stream's norm."""
    v = direction.astype(np.float32)
    if lm.config.norm == "layernorm":
        v = v - v.mean()
    logits = lm.weights.unembed @ (v * lm.weights.ln_final.g)  # [n_vocab, n_embd] @ [n_embd] -> [n_vocab]
    order = np.argsort(-logits, kind="stable")

    def pick(ids) -> list[OutputToken]:
        return [OutputToken(int(i), lm.token_text(int(i)), float(logits[i])) for i in ids]

    return pick(order[:top]), pick(order[::-1][:top])


def card_from_index(lm: LanguageModel, loaded: LoadedSae, index, feature: int) -> dict:
    """Contexts, density and histogram of `feature` from llmx_index.safetensors (engine/sae/index.py)."""
    contexts = []
    for act, window, center in zip(index.top_acts[feature], index.top_tokens[feature], index.top_center[feature]):
        if act <= 0:
            continue
        window, center = [int(t) for t in window], int(center)
        kept = [t for t in window if t >= 0]
        center -= sum(t < 0 for t in window[:center])  # -1s before the document's first token
        contexts.append(Context(float(act), kept, token_texts(lm, kept), center))
    counts = [int(c) for c in index.hist[feature]]
    edges = np.linspace(0.0, float(index.top_acts[feature][0]), len(counts) + 1).tolist()
    return dict(source="index", tokens=int(index.tokens), density=float(index.density[feature]),
                contexts=contexts, histogram=Histogram(edges, counts) if sum(counts) else None)


def card_from_text(lm: LanguageModel, loaded: LoadedSae, text: str, feature: int) -> dict:
    """Contexts, density and histogram of `feature` over `text`, read in chunks of SCAN_CHUNK tokens."""
    chunks, acts = [], []
    for chunk in text_chunks(lm, loaded, text):
        chunks.append(chunk)
        acts.append(activations(lm, loaded, chunk)[:, feature])
    skip = 1  # position 0 of each chunk is the attention sink (see the module): left out of the statistics
    start = lm.tokenizer.start_ids[:1]  # not shown in contexts
    values = np.concatenate([a[skip:] for a in acts]) if acts else np.zeros(0, np.float32)
    contexts = []
    for c, p in top_positions(acts, N_TOP_SCAN, skip):
        lo, hi = max(int(chunks[c][:1] == start), p - WINDOW[0]), min(len(chunks[c]), p + WINDOW[1] + 1)
        window = chunks[c][lo:hi]
        contexts.append(Context(float(acts[c][p]), window, token_texts(lm, window), p - lo))
    fired = values[values > 0]
    histogram = None
    if len(fired):
        counts, edges = np.histogram(fired, bins=N_BINS, range=(0.0, float(fired.max())))
        histogram = Histogram(edges.tolist(), counts.tolist())
    return dict(source="data", tokens=len(values), density=float(len(fired) / len(values)) if len(values) else None,
                contexts=contexts, histogram=histogram)


def text_chunks(lm: LanguageModel, loaded: LoadedSae, text: str) -> list[list[int]]:
    """`text`'s tokens in pieces that fit the context, each after the start token when the SAE expects one or
    the model's tokenizer starts texts with one (as for a prompt: Gemma needs it)."""
    ids = lm.tokenizer.encode(text)
    start = lm.tokenizer.start_ids[:1]
    if ids[:1] == start and lm.tokenizer.add_bos:
        ids = ids[1:]
    first = start if loaded.prepend_bos or lm.tokenizer.add_bos else []
    size = min(SCAN_CHUNK, lm.config.n_ctx) - len(first)
    return [first + ids[i:i + size] for i in range(0, len(ids), size)]


def top_positions(acts: list[np.ndarray], n: int, skip: int) -> list[tuple[int, int]]:
    """(chunk, position) of the n largest activations > 0, largest first, positions before `skip` left out."""
    found = [(-float(a[p]), c, p) for c, a in enumerate(acts) for p in np.flatnonzero(a[skip:] > 0) + skip]
    return [(c, p) for _, c, p in sorted(found)[:n]]


def feature_card(lm: LanguageModel, loaded: LoadedSae, feature: int, index=None, text: str | None = None,
                 top: int = 10, n_contexts: int = N_TOP) -> FeatureCard:
    """One latent's card: its `n_contexts` strongest contexts in `text` if given, else in `index`; its `top`
    output tokens each way; its density."""
    check_feature(loaded, feature)
    if text is not None:
        found = card_from_text(lm, loaded, text, feature)
    elif index is not None:
        found = card_from_index(lm, loaded, index, feature)
    else:
        log = loaded.log_sparsity
        found = dict(source="none", tokens=0, density=None if log is None else float(10.0 ** log[feature]),
                     contexts=[], histogram=None)
    found["contexts"] = found["contexts"][:n_contexts]
    positive, negative = output_tokens(lm, loaded.sae.w_dec[feature], top) if loaded.on_stream else ([], [])
    return FeatureCard(sae=loaded.ref, hook=loaded.site, feature=feature, d_sae=loaded.sae.d_sae,
                       positive=positive, negative=negative, **found)


@dataclass(frozen=True)
class FeatureSteering:
    prompt: str
    prompt_ids: list[int]  # the prompt after the start token: both continuations condition on it
    sae: str
    hook: str  # llmx's hook name where the vector is added
    feature: int
    coef: float
    vector_norm: float  # norm of coef * W_dec[feature], the vector added at every position
    seed: int | None
    steered: Continuation
    plain: Continuation


def feature_hooks(loaded: LoadedSae, vector: np.ndarray) -> Hooks:
    """Hooks adding `vector` [d_in] to the SAE's hook at every position (prompt and generated tokens)."""

    def add(value: np.ndarray, site: Site) -> np.ndarray:
        return value + vector.reshape(value.shape[1:]).astype(value.dtype)  # attn.z: [n_head, d_head]

    return Hooks([(loaded.site, add)])


def steer_feature(lm: LanguageModel, loaded: LoadedSae, prompt: str, feature: int, coef: float,
                  max_tokens: int = 40, sampling: Sampling | None = None, seed: int | None = None,
                  on_notice=ignore) -> FeatureSteering:
    """Continue `prompt` twice with the same seed: with coef * W_dec[feature] added at the SAE's hook, and without."""
    check_feature(loaded, feature)
    vector = (np.float32(coef) * loaded.sae.w_dec[feature]).astype(np.float32)
    prompt_ids = with_start(lm, lm.prompt_ids(prompt))
    runs = steered_and_plain(lm, prompt_ids, feature_hooks(loaded, vector), max_tokens, sampling, seed, on_notice)
    return FeatureSteering(prompt=prompt, prompt_ids=prompt_ids, sae=loaded.ref, hook=loaded.site, feature=feature,
                           coef=coef, vector_norm=float(np.linalg.norm(vector)), seed=seed, steered=runs[0],
                           plain=runs[1])
