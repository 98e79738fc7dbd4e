"""Scoring text: how surprising each token is to the model, and the totals people compare models by.

Each token t is scored by its log-probability given the tokens before it, log p(t | ...).
Like Hugging Face's loss, the first token has nothing before it and is not scored; with
`bos=True` the start-of-text token (<|endoftext|> for GPT-2, BOS for Llama) is put first, so
every token of the text is scored. A text longer than the context is scored in sliding windows
(as in Hugging Face's perplexity guide): each window of n_ctx tokens scores only its last
`stride` tokens (all of them, for the first), so each token sees at least n_ctx - stride
tokens of context. This is the one exception to the context policy of `context.py` (keep a long
text's last tokens): a score must cover every token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import InputError, count
from .nn import log_softmax


@dataclass(frozen=True)
class TokenScore:
    id: int
    piece: bytes  # the bytes this token stands for
    text: str  # those bytes decoded (U+FFFD for a piece of a character)
    logprob: float | None  # natural log of p(token | tokens before it); None when not scored

    @property
    def bits(self) -> float | None:
        """Surprisal in bits: -log2 p."""
        return None if self.logprob is None else -self.logprob / math.log(2)


@dataclass(frozen=True)
class Score:
    tokens: tuple[TokenScore, ...]  # the text's tokens, in order (a prepended start token is not listed)
    windows: int  # forward passes: 1 unless the text is longer than the context
    stride: int  # new tokens scored per window after the first

    @property
    def scored(self) -> tuple[TokenScore, ...]:
        return tuple(t for t in self.tokens if t.logprob is not None)

    @property
    def n_bytes(self) -> int:
        """UTF-8 bytes of the scored tokens (the whole text when the first token is scored too)."""
        return sum(len(t.piece) for t in self.scored)

    @property
    def total_nll(self) -> float:
        """-sum log p over the scored tokens, in nats."""
        return -math.fsum(t.logprob for t in self.scored)

    @property
    def mean_nll(self) -> float:
        """Mean negative log-likelihood in nats per token: Hugging Face's `loss`."""
        return self.total_nll / len(self.scored)

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll)

    @property
    def bits_per_byte(self) -> float:
        """Total surprisal in bits over the scored tokens' UTF-8 bytes: comparable across tokenizers."""
        return self.total_nll / math.log(2) / self.n_bytes if self.n_bytes else float("nan")


def score(model, ids: list[int], *, bos: bool = False, stride: int | None = None,
          on_notice: Callable[[str], None] = lambda message: None, on_progress=None) -> Score:
    """Score token ids of a text with `model` (a `LanguageModel`); see the module docstring.

    stride defaults to half the context. `on_notice` hears when the text needs several windows,
    `on_progress(done, total)` how far a long window's pass is.
    """
    n_ctx = model.config.n_ctx
    stride = n_ctx // 2 if stride is None else stride
    if not 1 <= stride < n_ctx:
        raise InputError(f"the stride must be between 1 and {n_ctx - 1} (the context minus one), not {stride}")
    start = model.tokenizer.start_ids if bos and ids[:1] != model.tokenizer.start_ids else []
    seq = start + list(ids)
    if len(seq) < 2:
        raise InputError(f"the text has {len(ids)} token{'s' * (len(ids) != 1)}: scoring needs a token before "
                         "the first one scored: give a longer text, or put the start token first (--bos)")
    if len(seq) > n_ctx:
        on_notice(f"the text has {len(seq)} tokens, more than the model's context of {n_ctx}: scoring it in "
                  f"{1 + -(-(len(seq) - n_ctx) // stride)} sliding windows, each scoring {count(stride, 'new token')} "
                  f"after at least {count(n_ctx - stride, 'token')} of context")
    logprobs = [None] * len(seq)  # logprobs[t] scores seq[t] given seq[:t]
    windows, begin, done = 0, 0, 1
    while done < len(seq):
        end = min(begin + n_ctx, len(seq))
        for t, lp in window_logprobs(model, seq[begin:end], done - begin, on_progress):
            logprobs[begin + t] = lp
        windows, done, begin = windows + 1, end, begin + stride
    return Score(tuple(TokenScore(i, model.tokenizer.piece(i), model.token_text(i), lp)
                       for i, lp in zip(seq[len(start):], logprobs[len(start):])), windows, stride)


def window_logprobs(model, window: list[int], first: int, on_progress=None):
    """(t, log p(window[t] | window[:t])) for t from `first` on, one chunk of the pass at a time: memory holds
    one chunk's logits [n_chunk, n_vocab], never the whole window's."""
    row = 0  # the window position of the chunk's first row; row r predicts window[r + 1]
    for logits, _ in model.forward_chunks(window[:-1], on_progress=on_progress):  # [n_chunk, n_vocab]
        lo, hi = max(row, first - 1), row + len(logits)
        if hi > lo:
            yield from zip(range(lo + 1, hi + 1), target_logprobs(logits[lo - row:], window[lo + 1:hi + 1]))
        row = hi


def target_logprobs(logits: np.ndarray, targets: list[int], rows: int = 64) -> list[float]:
    """log softmax(logits[j])[targets[j]] for each j, a few rows at a time to bound memory.

    float32 is enough: log_softmax subtracts the max first, and its sum over the vocabulary is pairwise.
    """
    out = []
    for s in range(0, len(targets), rows):
        chunk = log_softmax(logits[s:s + rows])  # [rows, n_vocab]
        out.extend(chunk[np.arange(len(chunk)), targets[s:s + rows]].astype(np.float64).tolist())
    return out
