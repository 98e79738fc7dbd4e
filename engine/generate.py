"""Generating text: prompt in one batched pass, then one cached single-position pass per new token."""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from .errors import InputError, count
from .model import KVCache
from .sampling import Sampling, sample


@dataclass(frozen=True)
class Step:
    id: int  # the token just sampled
    text: str  # text that is now safe to show (empty while a character or a possible stop sequence is incomplete)


@dataclass
class Generation:
    """Iterate to run the generation step by step; afterwards `ids`, `text` and `finish_reason` hold the result.

    finish_reason is "stop" (end-of-text token or a stop sequence) or "length" (max_tokens reached).
    """

    model: "LanguageModel"  # noqa: F821 - engine.lm
    prompt_ids: list[int]
    max_tokens: int
    sampling: Sampling = field(default_factory=Sampling)
    seed: int | None = None
    stop: tuple[str, ...] = ()
    on_notice: Callable[[str], None] = lambda message: None
    ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None

    def __post_init__(self):
        if self.max_tokens < 0:
            raise InputError(f"max tokens must be 0 or more, not {self.max_tokens}")
        if any(s == "" for s in self.stop):
            raise InputError("a stop sequence cannot be empty")
        self.prompt_ids = fit_context(self.prompt_ids, self.model.config.n_ctx - self.max_tokens,
                                      self.model.config.n_ctx, self.on_notice)

    def __iter__(self) -> Iterator[Step]:
        rng = np.random.default_rng(self.seed)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""  # decoded text not yet shown: it may still turn out to start a stop sequence
        context = list(self.prompt_ids)
        logits, cache = self.model.forward(context)
        while len(self.ids) < self.max_tokens:
            token = sample(logits, self.sampling, rng)
            if token in self.model.tokenizer.eos_ids:
                self.finish_reason = "stop"
                break
            self.ids.append(token)
            context.append(token)
            pending += decoder.decode(self.model.tokenizer.piece(token))
            shown, pending, stopped = split_at_stop(pending, self.stop)
            self.text += shown
            yield Step(token, shown)
            if stopped:
                self.finish_reason = "stop"
                return
            if len(self.ids) == self.max_tokens:
                break
            if cache.length == self.model.config.n_ctx:  # the window is full: keep its second half
                context = context[-(self.model.config.n_ctx // 2):]
                self.on_notice(f"context window of {self.model.config.n_ctx} tokens is full: "
                               f"continuing from the last {count(len(context), 'token')}")
                logits, cache = self.model.forward(context)
            else:
                logits, cache = self.model.forward([token], cache)
        self.finish_reason = self.finish_reason or "length"
        pending += decoder.decode(b"", final=True)
        if pending:
            self.text += pending
            yield Step(self.ids[-1] if self.ids else -1, pending)


def split_at_stop(pending: str, stops: tuple[str, ...]) -> tuple[str, str, bool]:
    """(text to show now, text to hold back, whether a stop sequence was reached)."""
    hits = [pending.find(s) for s in stops if s in pending]
    if hits:
        return pending[:min(hits)], "", True
    hold = max((n for s in stops for n in range(1, len(s)) if pending.endswith(s[:n])), default=0)
    return pending[:len(pending) - hold], pending[len(pending) - hold:], False


def fit_context(ids: list[int], budget: int, n_ctx: int, on_notice: Callable[[str], None]) -> list[int]:
    """Keep the most recent tokens of a prompt so that it and the tokens to generate fit the window."""
    keep = max(budget, min(len(ids), n_ctx // 2), 1)
    keep = min(keep, n_ctx)
    if len(ids) > keep:
        on_notice(f"prompt of {len(ids)} tokens does not fit the model's context of {n_ctx} tokens "
                  f"with the tokens to generate: keeping its last {count(keep, 'token')}")
        return ids[-keep:]
    return ids
