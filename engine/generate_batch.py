"""Generating for several requests at once: each prompt prefilled alone, then one decode step per token for
all the rows still running (engine/batched.py: the weights read once per step for the whole batch).

    results = model.complete_batch([ids_a, ids_b], 20, seeds=[1, 2], sampling=Sampling(temperature=0.8))
    for index, result in model.generate_batch([ids] * 4, 20, seeds=[1, 2, 3, 4]): ...  # as rows finish

Result i is what `model.complete(prompts[i], max_tokens, seed=seeds[i], ...)` gives: each row samples with
its own generator (seeded with its own seed), stops on its own (end-of-text, a stop sequence, its max
tokens) and then leaves the batch; a row whose window fills up slides it alone, as a single run does.
Greedy rows give the same tokens; the logits agree to float32 rounding (see batched.py), so a token can
differ only where two candidates are that close.

Requests with hooks (steering, ablation: a `HookedModel`, or `hooks=`) are not batched: each runs alone
through `generate.run`, since a hook sees the passes of one sequence.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from .attention import KVCache, RowCaches
from .batched import forward_rows
from .context import slide
from .generate import Generation, GenerationResult, StreamedText
from .sampling import sample


class Row:
    """One request's run inside a batch: the state `generate.run` keeps in its local variables."""

    def __init__(self, index: int, generation: Generation, slot: KVCache):
        self.index, self.model, self.req, self.on_notice = (index, generation.model, generation.request,
                                                            generation.on_notice)
        self.slot = slot  # the row's empty cache: its slot of the batch's buffers
        self.rng = np.random.default_rng(self.req.seed)  # the row's own generator: as a single run with its seed
        self.text = StreamedText(self.req.stop)
        self.ids: list[int] = []
        self.context = list(self.req.prompt_ids)
        self.token = -1  # the token just taken, which the next decode step runs
        self.logits, self.cache = self.model.forward(self.context, slot)  # the prompt, prefilled alone

    def choose(self) -> GenerationResult | None:
        """Sample the next token; the row's result when that ends its run (None while it goes on)."""
        if len(self.ids) >= self.req.max_tokens:  # max_tokens 0
            return self.finish("length")
        token = sample(self.logits, self.req.sampling, self.rng)
        if token in self.model.tokenizer.eos_ids:
            return self.finish("stop")
        self.ids.append(token)
        self.context.append(token)
        _, stopped = self.text.add(self.model.tokenizer.piece(token))
        if stopped:  # the text held back is the stop sequence's start: not flushed
            return GenerationResult(self.text.shown, self.ids, "stop", list(self.req.prompt_ids))
        if len(self.ids) == self.req.max_tokens:
            return self.finish("length")
        self.token = token
        return None

    def finish(self, reason: str) -> GenerationResult:
        self.text.flush()
        return GenerationResult(self.text.shown, self.ids, reason, list(self.req.prompt_ids))

    def slide(self) -> None:
        """The window is full: continue from its last half, prefilled again (as generate.run does)."""
        self.context = slide(self.context, self.model.config.n_ctx, self.on_notice)
        self.logits, self.cache = self.model.forward(self.context, self.slot)


def batchable(generation: Generation) -> bool:
    """Whether the generation's passes are plain `forward`s, which a batch row can stand in for (no hooks)."""
    from .lm import LanguageModel

    kind = type(generation.model)  # a HookedModel (ablation, steering) adds its hooks in forward_chunks
    plain = kind.forward is LanguageModel.forward and kind.forward_chunks is LanguageModel.forward_chunks
    return generation.request.hooks is None and plain


def run_batch(generations: Sequence[Generation]) -> Iterator[tuple[int, GenerationResult]]:
    """(index, result) of each generation, in the order they finish. Plain generations of one model run as
    one batch; any others (hooks, another model) run alone first."""
    plain = [i for i, g in enumerate(generations) if batchable(g)]
    plain = [i for i in plain if generations[i].model.weights is generations[plain[0]].model.weights]
    for i, generation in enumerate(generations):
        if i not in plain:
            yield i, generation.result()
    if not plain:
        return
    model = generations[plain[0]].model
    caches = RowCaches.empty(model.config, len(plain), model.weights.embed.dtype)
    live = [Row(i, generations[i], caches.cache(slot)) for slot, i in enumerate(plain)]
    while live:
        going = []
        for row in live:
            result = row.choose()
            if result is None:
                going.append(row)
            else:
                yield row.index, result
        step(going)
        live = going


def step(rows: list[Row]) -> None:
    """Each row's next logits after its token: rows whose window is full slide alone, the others share one
    decode step."""
    if not rows:
        return
    model = rows[0].model
    rest = [row for row in rows if row.cache.length < model.config.n_ctx]
    for row in rows:
        if row.cache.length == model.config.n_ctx:
            row.slide()
    if rest:
        logits, caches = forward_rows([row.token for row in rest], model.weights, model.config,
                                      [row.cache for row in rest])
        for row, row_logits, cache in zip(rest, logits, caches):
            row.logits, row.cache = row_logits, cache


def complete_all(generations: Sequence[Generation]) -> list[GenerationResult]:
    """The result of each generation, in their order, computed as one batch where they can be."""
    results: list[GenerationResult | None] = [None] * len(generations)
    for index, result in run_batch(generations):
        results[index] = result
    return results

