"""Generating text: prompt in one batched pass, then one cached single-position pass per new token.

    generation = model.generate(ids, 20, seed=1)      # a request: nothing runs yet
    for step in generation: print(step.text, end="")  # one run, step by step
    result = generation.result()                      # text, ids, finish_reason of that run
    model.complete(ids, 20, seed=1)                    # the same result without the steps

Iterating a `Generation` again starts a fresh run from the prompt (the same tokens when the seed is set).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from .context import fit_and_tell, slide
from .errors import InputError
from .hooks import Hooks
from .lookup import Lookup, usable
from .sampling import Sampling, sample


@dataclass(frozen=True)
class Step:
    id: int  # the token just sampled (the last one again for text held back until the end)
    text: str  # text that is now safe to show (empty while a character or a possible stop sequence is incomplete)


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: tuple[int, ...]  # after fitting the context (see context.py)
    max_tokens: int
    sampling: Sampling = field(default_factory=Sampling)
    seed: int | None = None  # None: different tokens each run
    stop: tuple[str, ...] = ()  # stop before the first of these texts; it is not part of the result
    hooks: Hooks | None = None  # run on every forward pass (steering, recording, ...)
    on_progress: Callable[[int, int], None] | None = field(default=None, compare=False)  # hears a long prompt's pass
    lookup: bool = True  # greedy runs check tokens copied from the text so far, several per pass (see lookup.py)

    def __post_init__(self):
        if self.max_tokens < 0:
            raise InputError(f"max tokens must be 0 or more, not {self.max_tokens}")
        if any(s == "" for s in self.stop):
            raise InputError("a stop sequence cannot be empty")


@dataclass(frozen=True)
class GenerationResult:
    text: str  # the generated text (without the prompt, or the stop sequence)
    ids: list[int]  # the generated tokens (an end-of-text token that ended it is not among them)
    finish_reason: str  # "stop" (end-of-text token or a stop sequence) or "length" (max_tokens reached)
    prompt_ids: list[int]  # the prompt the model saw


class Generation:
    """A request bound to a model: iterate for `Step`s (each iteration a fresh run), `result()` for the outcome."""

    def __init__(self, model, request: GenerationRequest, on_notice: Callable[[str], None] = lambda message: None):
        self.model, self.request, self.on_notice = model, request, on_notice
        self._last: GenerationResult | None = None  # the last run iterated to its end

    @property
    def prompt_ids(self) -> list[int]:
        return list(self.request.prompt_ids)

    def __iter__(self) -> Iterator[Step]:
        self._last = yield from run(self.model, self.request, self.on_notice)

    def result(self) -> GenerationResult:
        """The result of the last run iterated to its end, or of a new run when there is none."""
        if self._last is None:
            for _ in self:
                pass
        return self._last

    # Shorthands for result()'s fields, so `generation.finish_reason` after a loop over it keeps working.
    text = property(lambda self: self.result().text)
    ids = property(lambda self: self.result().ids)
    finish_reason = property(lambda self: self.result().finish_reason)


def request(model, prompt_ids: list[int], max_tokens: int, *, on_notice=lambda message: None,
            **options) -> GenerationRequest:
    """A request whose prompt fits the context with room for the tokens to generate (see context.py)."""
    prompt = fit_and_tell(list(prompt_ids), model.config.n_ctx, on_notice, reserve=max_tokens)
    return GenerationRequest(tuple(prompt), max_tokens, **options)


def run(model, req: GenerationRequest, on_notice) -> Iterator[Step]:
    """One run of `req`: yields steps, returns the `GenerationResult`."""
    rng = np.random.default_rng(req.seed)
    text = StreamedText(req.stop)
    ids: list[int] = []
    context = list(req.prompt_ids)
    logits, cache = model.forward(context, hooks=req.hooks, on_progress=req.on_progress)
    ahead = Lookup(model) if usable(model, req) else None  # same tokens, fewer passes
    finish = "length"
    while len(ids) < req.max_tokens:
        token = sample(logits, req.sampling, rng)
        if token in model.tokenizer.eos_ids:
            finish = "stop"
            break
        ids.append(token)
        context.append(token)
        shown, stopped = text.add(model.tokenizer.piece(token))
        yield Step(token, shown)
        if stopped:
            return GenerationResult(text.shown, ids, "stop", list(req.prompt_ids))
        if len(ids) == req.max_tokens:
            break
        if cache.length == model.config.n_ctx:  # the window is full: continue from its last half
            context = slide(context, model.config.n_ctx, on_notice)
            logits, cache = model.forward(context, hooks=req.hooks)
        else:
            logits, cache = (ahead.next(context, cache, req.max_tokens - len(ids)) if ahead else
                             model.forward([token], cache, hooks=req.hooks))
    rest = text.flush()
    if rest:
        yield Step(ids[-1] if ids else -1, rest)
    return GenerationResult(text.shown, ids, finish, list(req.prompt_ids))


class StreamedText:
    """Token bytes to text as it becomes safe to show: whole UTF-8 characters, stop sequences held back."""

    def __init__(self, stop: tuple[str, ...]):
        self.stop, self.shown, self.pending = stop, "", ""  # pending may still turn out to start a stop sequence
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, piece: bytes) -> tuple[str, bool]:
        """(text to show now, whether a stop sequence was reached)."""
        shown, self.pending, stopped = split_at_stop(self.pending + self.decoder.decode(piece), self.stop)
        self.shown += shown
        return shown, stopped

    def flush(self) -> str:
        """The text held back, at the end of a run that did not stop at a stop sequence."""
        rest, self.pending = self.pending + self.decoder.decode(b"", final=True), ""
        self.shown += rest
        return rest


def split_at_stop(pending: str, stops: tuple[str, ...]) -> tuple[str, str, bool]:
    """(text to show now, text to hold back, whether a stop sequence was reached)."""
    hits = [pending.find(s) for s in stops if s in pending]
    if hits:
        return pending[:min(hits)], "", True
    hold = max((n for s in stops for n in range(1, len(s)) if pending.endswith(s[:n])), default=0)
    return pending[:len(pending) - hold], pending[len(pending) - hold:], False
