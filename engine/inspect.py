"""Looking inside the model: the logit lens, attention patterns, head scores, embedding neighbours,
activation steering and a step-by-step account of one prediction.

Pure functions over a `LanguageModel` that return data (dataclasses and arrays); nothing here prints.
They use only `Config`, `Weights` and `forward` with a `Trace` or a `Steer`, so they work the same on
GPT-2 (LayerNorm, learned positions) and Llama (RMSNorm, rotary positions, grouped-query attention).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .lm import LanguageModel, Prediction
from .model import Steer, Trace, norm
from .nn import log_softmax
from .sampling import Sampling

# ---------------------------------------------------------------------------------------------
# Checks shared by the functions below: each failure is one line that says what is allowed.


def check_length(lm: LanguageModel, ids: list[int]) -> None:
    if len(ids) > lm.config.n_ctx:
        raise InputError(f"the text has {len(ids)} tokens, more than the model's context of {lm.config.n_ctx}: "
                         "shorten it")


def check_layer(lm: LanguageModel, layer: int) -> None:
    if not 0 <= layer < lm.config.n_layer:
        raise InputError(f"layer {layer} does not exist: this model has blocks 0..{lm.config.n_layer - 1}")


def check_head(lm: LanguageModel, head: int) -> None:
    if not 0 <= head < lm.config.n_head:
        raise InputError(f"head {head} does not exist: each block of this model has heads 0..{lm.config.n_head - 1}")


def resolve_position(position: int, n_seq: int) -> int:
    """A position in 0..n_seq-1, or counted from the end when negative (-1 is the last token)."""
    if not -n_seq <= position < n_seq:
        raise InputError(f"position {position} is outside the text's {n_seq} tokens: "
                         f"use 0..{n_seq - 1}, or -1 for the last")
    return position % n_seq


def token_texts(lm: LanguageModel, ids) -> list[str]:
    return [lm.token_text(int(i)) for i in ids]


# ---------------------------------------------------------------------------------------------
# The logit lens: read the residual stream after each block as if it were the last one.


def layer_names(n_layer: int) -> list[str]:
    """Names of the lens rows: the stream after the embeddings, then after each block."""
    return ["embed"] + [f"block {i}" for i in range(n_layer)]


@dataclass(frozen=True)
class Lens:
    ids: list[int]  # the input tokens
    tokens: list[str]
    layers: list[str]  # row names: "embed", "block 0", ..., "block N-1" (the model's real output)
    positions: list[int]  # the positions read
    top: list[list[list[Prediction]]]  # [layer][index into positions][rank]: next-token guesses


def unembed(x: np.ndarray, lm: LanguageModel) -> np.ndarray:
    """Residual stream to logits the way the model's head does it: final norm, then the unembedding."""
    return norm(x, lm.weights.ln_final, lm.config) @ lm.weights.unembed.T  # [n, n_embd] -> [n, n_vocab]


def residual_streams(lm: LanguageModel, ids: list[int]) -> tuple[list[np.ndarray], np.ndarray]:
    """([stream after the embeddings, after block 0, ..., after block N-1], each [n_seq, n_embd];
    the model's own logits for the last position, exactly as `predict` computes them)."""
    last = lm.config.n_layer - 1
    trace = Trace(("blocks.*.resid_pre", f"blocks.{last}.resid_post"))
    logits, _ = lm.forward(ids, trace=trace)
    streams = [trace[f"blocks.{i}.resid_pre"] for i in range(lm.config.n_layer)]
    return streams + [trace[f"blocks.{last}.resid_post"]], logits


def logit_lens(lm: LanguageModel, ids: list[int], top: int = 1, positions: list[int] | None = None) -> Lens:
    """The top-`top` next tokens at every layer and position (or only at `positions`).

    The last row is the model's real output; its last cell is the very computation `predict` runs.
    """
    check_length(lm, ids)
    positions = list(range(len(ids))) if positions is None else [resolve_position(p, len(ids)) for p in positions]
    streams, final_logits = residual_streams(lm, ids)
    rows = []
    for stream in streams:
        logits = unembed(stream[positions], lm)  # [n_positions, n_vocab]
        rows.append([lm.top_predictions(row, top) for row in logits])
    if positions and positions[-1] == len(ids) - 1:
        rows[-1][-1] = lm.top_predictions(final_logits, top)  # the same numbers as `predict`, not a recomputation
    return Lens(ids=list(ids), tokens=token_texts(lm, ids), layers=layer_names(lm.config.n_layer),
                positions=positions, top=rows)


# ---------------------------------------------------------------------------------------------
# Attention patterns.


@dataclass(frozen=True)
class Attention:
    ids: list[int]
    tokens: list[str]
    layer: int
    heads: list[int]  # the heads in `pattern`, in order
    pattern: np.ndarray  # [len(heads), dest, src]: how much each token (row) reads from each earlier one


def attention(lm: LanguageModel, ids: list[int], layer: int, head: int | None = None) -> Attention:
    """The attention pattern of every head of block `layer` (or of one head) over the text."""
    check_length(lm, ids)
    check_layer(lm, layer)
    if head is not None:
        check_head(lm, head)
    name = f"blocks.{layer}.attn.pattern"
    trace = Trace((name,))
    lm.forward(ids, trace=trace)
    heads = list(range(lm.config.n_head)) if head is None else [head]
    return Attention(ids=list(ids), tokens=token_texts(lm, ids), layer=layer, heads=heads,
                     pattern=trace[name][heads])


# ---------------------------------------------------------------------------------------------
# Head scores on random tokens repeated twice (TransformerLens / ARENA definitions).


@dataclass(frozen=True)
class HeadScores:
    previous: np.ndarray  # [n_head] mean attention to the previous token
    duplicate: np.ndarray  # [n_head] mean attention, in the second half, to the same token in the first half
    induction: np.ndarray  # [n_head] mean attention, in the second half, to the token after that earlier copy


def score_heads(pattern: np.ndarray, seq_len: int, prefix: int = 0) -> HeadScores:
    """Score heads from their pattern [head, dest, src] on `prefix` tokens then a sequence of 2 * seq_len.

    For a destination i in the second half (prefix + seq_len <= i < prefix + 2 * seq_len):
    duplicate reads src = i - seq_len, induction src = i - seq_len + 1; previous reads src = i - 1
    for every token of the sequence after its first.
    """
    n_seq = pattern.shape[-1]
    if pattern.shape[-2] != n_seq or n_seq != prefix + 2 * seq_len or seq_len < 1:
        raise InputError(f"a pattern over {n_seq} positions is not {prefix} prefix tokens and 2 x {seq_len}")
    second = np.arange(prefix + seq_len, prefix + 2 * seq_len)  # destinations in the second half
    after_first = np.arange(prefix + 1, prefix + 2 * seq_len)
    return HeadScores(previous=pattern[:, after_first, after_first - 1].mean(-1),
                      duplicate=pattern[:, second, second - seq_len].mean(-1),
                      induction=pattern[:, second, second - seq_len + 1].mean(-1))


def random_sequences(lm: LanguageModel, seq_len: int, seed: int) -> tuple[list[int], list[int]]:
    """(start token + seq_len random tokens twice, start token + 2 * seq_len random tokens that never repeat).

    Tokens are drawn without replacement from the vocabulary less its special tokens.
    """
    tok = lm.tokenizer
    special = set(tok.eos_ids) | ({tok.bos_id} if tok.bos_id is not None else set())
    pool = np.setdiff1d(np.arange(lm.config.n_vocab), np.array(sorted(special), dtype=np.int64))
    if 2 * seq_len > len(pool):
        raise InputError(f"a sequence length of {seq_len} needs more distinct tokens than the vocabulary has")
    rng = np.random.default_rng(seed)
    half = rng.choice(pool, seq_len, replace=False).tolist()
    control = rng.choice(pool, 2 * seq_len, replace=False).tolist()
    start = tok.start_ids[:1]
    return start + half + half, start + control


@dataclass(frozen=True)
class HeadScore:
    layer: int
    head: int
    induction: float
    previous: float
    duplicate: float
    control_induction: float  # the same scores on the sequence without repeats
    control_previous: float
    control_duplicate: float


@dataclass(frozen=True)
class HeadScan:
    seq_len: int
    seed: int
    repeated_ids: list[int]  # start token, then seq_len random tokens twice
    control_ids: list[int]  # start token, then 2 * seq_len random tokens without repeats
    heads: list[HeadScore]  # every head, highest induction score first


def patterns(lm: LanguageModel, ids: list[int]) -> list[np.ndarray]:
    """Every block's attention pattern [head, dest, src] over `ids`."""
    trace = Trace(("blocks.*.attn.pattern",))
    lm.forward(ids, trace=trace)
    return [trace[f"blocks.{i}.attn.pattern"] for i in range(lm.config.n_layer)]


def scan_heads(lm: LanguageModel, seq_len: int = 50, seed: int = 0) -> HeadScan:
    """Score every head for previous-token, duplicate-token and induction behaviour, with a control."""
    if seq_len < 2 or 1 + 2 * seq_len > lm.config.n_ctx:
        raise InputError(f"sequence length {seq_len} must be 2..{(lm.config.n_ctx - 1) // 2} for this model "
                         f"(the start token and twice the sequence must fit its context of {lm.config.n_ctx})")
    repeated, control = random_sequences(lm, seq_len, seed)
    prefix = len(repeated) - 2 * seq_len
    heads = []
    for layer, (rep, ctl) in enumerate(zip(patterns(lm, repeated), patterns(lm, control))):
        r, c = score_heads(rep, seq_len, prefix), score_heads(ctl, seq_len, prefix)
        heads += [HeadScore(layer, h, float(r.induction[h]), float(r.previous[h]), float(r.duplicate[h]),
                            float(c.induction[h]), float(c.previous[h]), float(c.duplicate[h]))
                  for h in range(lm.config.n_head)]
    heads.sort(key=lambda s: (-s.induction, s.layer, s.head))
    return HeadScan(seq_len=seq_len, seed=seed, repeated_ids=repeated, control_ids=control, heads=heads)


# ---------------------------------------------------------------------------------------------
# Neighbours in the embedding matrix.


@dataclass(frozen=True)
class Neighbor:
    id: int
    token: str
    similarity: float  # cosine similarity of the two embeddings, -1..1


@dataclass(frozen=True)
class Neighbors:
    id: int
    token: str
    similar: list[Neighbor]  # nearest other tokens by cosine similarity of their embeddings
    unembedded: list[Prediction]  # what the embedding alone predicts: wte[id] (-> ln_f) @ lm_head.T
    through_norm: bool  # whether the final norm was applied before the unembedding
    tied: bool  # whether the unembedding is the embedding matrix itself (GPT-2)


def is_tied(lm: LanguageModel) -> bool:
    """Whether the unembedding is the embedding matrix itself (GPT-2 ties them; many Llamas do too)."""
    return lm.weights.unembed is lm.weights.embed or np.may_share_memory(lm.weights.unembed, lm.weights.embed)


def single_token(lm: LanguageModel, text: str) -> int:
    """The id of `text` when it is exactly one token; otherwise an error listing its tokens."""
    tok = lm.tokenizer
    ids = tok.encode(text)
    if tok.add_bos and ids[:1] == [tok.bos_id]:
        ids = ids[1:]
    if len(ids) != 1:
        pieces = ", ".join(f"{lm.token_text(i)!r} ({i})" for i in ids) or "none"
        raise InputError(f"{text!r} is {len(ids)} tokens, not one: {pieces}; give one of them, or an id with --id")
    return ids[0]


def neighbors(lm: LanguageModel, token_id: int, top: int = 10, through_norm: bool = True) -> Neighbors:
    lm.tokenizer.check_ids([token_id])
    wte = lm.weights.embed
    vector = wte[token_id].astype(np.float32)
    norms = np.linalg.norm(wte, axis=1).astype(np.float32)
    cosine = (wte @ vector) / np.maximum(norms * norms[token_id], np.float32(1e-12))  # [n_vocab]
    cosine[token_id] = -np.inf  # the token is its own nearest neighbour: leave it out
    best = np.argsort(-cosine, kind="stable")[:top]
    x = vector[None]
    logits = (unembed(x, lm) if through_norm else x @ lm.weights.unembed.T)[0]
    return Neighbors(id=token_id, token=lm.token_text(token_id),
                     similar=[Neighbor(int(i), lm.token_text(int(i)), float(cosine[i])) for i in best],
                     unembedded=lm.top_predictions(logits, top), through_norm=through_norm,
                     tied=is_tied(lm))


# ---------------------------------------------------------------------------------------------
# Steering by activation addition (ActAdd, Turner et al. 2023).


@dataclass(frozen=True)
class SteeredModel(LanguageModel):
    """A LanguageModel whose every forward pass adds `steer` to the residual stream."""

    steer: Steer | None = None

    def forward(self, ids, cache=None, **options):
        return super().forward(ids, cache, steer=self.steer, **options)


def with_start(lm: LanguageModel, ids: list[int]) -> list[int]:
    """ids after the model's start token, as TransformerLens (and so ActAdd) feeds every prompt."""
    start = lm.tokenizer.start_ids[:1]
    return ids if ids[:1] == start else start + ids


def pad_id(lm: LanguageModel) -> int:
    """ActAdd pads the shorter steering prompt with spaces; a model whose space is not one token, with end-of-text."""
    ids = lm.tokenizer.encode(" ")
    ids = ids[1:] if lm.tokenizer.add_bos and ids[:1] == [lm.tokenizer.bos_id] else ids
    return ids[0] if len(ids) == 1 else min(lm.tokenizer.eos_ids)


def steering_vector(lm: LanguageModel, add: str, sub: str, layer: int) -> tuple[np.ndarray, list[int], list[int]]:
    """(resid_pre[layer](add) - resid_pre[layer](sub) as [n_pos, n_embd], add ids, sub ids), both padded
    to the same length and after the start token."""
    check_layer(lm, layer)
    add_ids, sub_ids = with_start(lm, lm.tokenizer.encode(add)), with_start(lm, lm.tokenizer.encode(sub))
    n = max(len(add_ids), len(sub_ids))
    add_ids, sub_ids = (ids + [pad_id(lm)] * (n - len(ids)) for ids in (add_ids, sub_ids))
    check_length(lm, add_ids)
    streams = []
    for ids in (add_ids, sub_ids):
        trace = Trace((f"blocks.{layer}.resid_pre",))
        lm.forward(ids, trace=trace)
        streams.append(trace[f"blocks.{layer}.resid_pre"])
    return streams[0] - streams[1], add_ids, sub_ids


@dataclass(frozen=True)
class Continuation:
    ids: list[int]
    text: str
    finish_reason: str


@dataclass(frozen=True)
class Steering:
    prompt: str
    prompt_ids: list[int]  # the prompt after the start token: both continuations condition on it
    add_ids: list[int]  # the steering prompts, padded to the same length, after the start token
    sub_ids: list[int]
    add_tokens: list[str]
    sub_tokens: list[str]
    layer: int
    coef: float
    vector_norms: list[float]  # norm of coef * (add - sub) at each position it is added to
    seed: int | None
    steered: Continuation
    plain: Continuation


def steer(lm: LanguageModel, prompt: str, add: str, sub: str, layer: int, coef: float, max_tokens: int = 40,
          sampling: Sampling | None = None, seed: int | None = None, on_notice=lambda message: None) -> Steering:
    """Continue `prompt` twice with the same seed: with coef * (add - sub) added at block `layer`, and without."""
    diff, add_ids, sub_ids = steering_vector(lm, add, sub, layer)
    delta = (np.float32(coef) * diff).astype(np.float32)
    prompt_ids = with_start(lm, lm.prompt_ids(prompt))
    fields = {f.name: getattr(lm, f.name) for f in dataclasses.fields(LanguageModel)}
    runs = []
    for model in (SteeredModel(**fields, steer=Steer(layer, delta)), lm):
        generation = model.generate(prompt_ids, max_tokens, sampling=sampling or Sampling(), seed=seed,
                                    on_notice=on_notice)
        for _ in generation:
            pass
        runs.append(Continuation(generation.ids, generation.text, generation.finish_reason))
    return Steering(prompt=prompt, prompt_ids=prompt_ids, add_ids=add_ids, sub_ids=sub_ids,
                    add_tokens=token_texts(lm, add_ids),
                    sub_tokens=token_texts(lm, sub_ids), layer=layer, coef=coef,
                    vector_norms=np.linalg.norm(delta, axis=-1).tolist(), seed=seed, steered=runs[0], plain=runs[1])


# ---------------------------------------------------------------------------------------------
# One prediction, step by step.


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
    tokens: list[TokenStep]
    input_norm: float  # length of the last position's stream entering block 0
    blocks: list[BlockStep]
    final_norm: float  # length of the last position's stream after the final norm
    entropy: float  # of the next-token distribution, in bits
    top: list[Prediction]  # the same as `predict`


def explain(lm: LanguageModel, ids: list[int], top: int = 5, dims: int = 4) -> Explanation:
    """The numbers behind one next-token prediction, following the last position through the model."""
    check_length(lm, ids)
    cfg = lm.config
    trace = Trace(("embed", "pos_embed", "blocks.0.resid_pre", "blocks.*.attn.pattern", "blocks.*.attn_out",
                   "blocks.*.mlp_out", "blocks.*.resid_post", "ln_final"))
    logits, _ = lm.forward(ids, trace=trace)
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
                       positions=cfg.positions,
                       tied=is_tied(lm), tokens=tokens,
                       input_norm=float(np.linalg.norm(trace["blocks.0.resid_pre"][-1])), blocks=blocks,
                       final_norm=float(np.linalg.norm(trace["ln_final"][-1])),
                       entropy=float(-(np.exp(log_probs) * log_probs).sum() / np.log(2)),
                       top=lm.top_predictions(logits, top))
