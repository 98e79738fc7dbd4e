"""Attention patterns, and scores of every head for previous-token, duplicate-token and induction behaviour
on random tokens repeated twice (TransformerLens / ARENA definitions)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..hooks import Trace
from ..lm import LanguageModel, ignore
from .common import check_head, check_layer, token_texts


@dataclass(frozen=True)
class Attention:
    ids: list[int]
    tokens: list[str]
    layer: int
    heads: list[int]  # the heads in `pattern`, in order
    pattern: np.ndarray  # [len(heads), dest, src]: how much each token (row) reads from each earlier one


def attention(lm: LanguageModel, ids: list[int], layer: int, head: int | None = None,
              on_notice=ignore) -> Attention:
    """The attention pattern of every head of block `layer` (or of one head) over the text
    (its last n_ctx tokens when it is longer than the context: see context.py)."""
    check_layer(lm, layer)
    if head is not None:
        check_head(lm, head)
    ids = lm.fit(ids, on_notice)
    name = f"blocks.{layer}.attn.pattern"
    trace = Trace((name,))
    lm.forward(ids, hooks=trace)
    heads = list(range(lm.config.n_head)) if head is None else [head]
    return Attention(ids=list(ids), tokens=token_texts(lm, ids), layer=layer, heads=heads,
                     pattern=trace[name][heads])


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
    lm.forward(ids, hooks=trace)
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
