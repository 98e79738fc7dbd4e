"""A loaded language model: configuration, weights and tokenizer, with the operations the CLI needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .context import fit_and_tell
from .generate import Generation, GenerationResult, request
from .hooks import Hooks
from .model import Config, KVCache, Weights, forward_chunks, gathered, unembed
from .nn import log_softmax
from .tokenizer import Tokenizer


Progress = Callable[[int, int], None]  # on_progress(done, total): positions of a long prompt run so far


def ignore(message: str) -> None:
    """The default `on_notice`: say nothing."""


@dataclass(frozen=True)
class Prediction:
    rank: int  # 1 = most likely
    id: int
    token: str  # the token's text (bytes that are not whole UTF-8 characters shown as U+FFFD)
    prob: float
    logit: float


@dataclass(frozen=True)
class LanguageModel:
    name: str  # as the user gave it (Hub id, directory or .gguf file)
    path: Path  # where its files are
    config: Config
    weights: Weights = field(repr=False)  # repr(model) stays one line: print model.weights for their shapes
    tokenizer: Tokenizer = field(repr=False)

    def forward(self, ids, cache: KVCache | None = None, *, hooks: Hooks | None = None,
                all_logits: bool = False, on_progress: Progress | None = None,
                states: bool = False) -> tuple[np.ndarray, KVCache]:
        """logits, cache = model.forward(ids, cache): see `model.forward`; `hooks` read or replace activations,
        `on_progress(done, total)` hears how far a long prompt is; `states` gives final states for `unembed`."""
        return gathered(self.forward_chunks(ids, cache, hooks=hooks, all_logits=all_logits,
                                            on_progress=on_progress, states=states), all_logits)

    def forward_chunks(self, ids, cache: KVCache | None = None, *, hooks: Hooks | None = None,
                       all_logits: bool = True, on_progress: Progress | None = None, chunk: int | None = None,
                       states: bool = False):
        """(logits, cache) for each chunk of a long pass: see `model.forward_chunks` (all positions' logits
        in one chunk's memory)."""
        return forward_chunks(ids, self.weights, self.config, cache, hooks=hooks, all_logits=all_logits,
                              on_progress=on_progress, chunk=chunk, states=states)

    def unembed(self, states: np.ndarray) -> np.ndarray:
        """Logits [n, n_vocab] of final states [n, n_embd] from `forward(..., states=True)`."""
        return unembed(states, self.weights)

    def fit(self, ids: list[int], on_notice: Callable[[str], None] = ignore, reserve: int = 0,
            doing: str = "keeping") -> list[int]:
        """The last tokens of `ids` that fit the context (less `reserve`): the policy of `context.py`."""
        return fit_and_tell(ids, self.config.n_ctx, on_notice, reserve, doing)

    def prompt_ids(self, text: str) -> list[int]:
        """Token ids to condition on: the text's, or the start-of-text token for an empty prompt."""
        return self.tokenizer.encode(text) or self.tokenizer.start_ids

    def token_text(self, token_id: int) -> str:
        return self.tokenizer.text(token_id)

    def predict(self, ids: list[int], top: int = 10, on_notice: Callable[[str], None] = ignore,
                on_progress: Progress | None = None) -> list[Prediction]:
        """The `top` most likely next tokens after `ids` (their last n_ctx), most likely first."""
        logits, _ = self.forward(self.fit(ids, on_notice, doing="predicting from"), on_progress=on_progress)
        return self.top_predictions(logits, top)

    def top_predictions(self, logits: np.ndarray, top: int) -> list[Prediction]:
        top = min(top, len(logits))
        best = np.argpartition(logits, -top)[-top:]
        best = best[np.argsort(-logits[best], kind="stable")]
        probs = np.exp(log_softmax(logits.astype(np.float64)))
        return [Prediction(rank=r + 1, id=int(i), token=self.token_text(int(i)), prob=float(probs[i]),
                           logit=float(logits[i])) for r, i in enumerate(best)]

    def generate(self, prompt_ids: list[int], max_tokens: int, *, on_notice: Callable[[str], None] = ignore,
                 **options) -> Generation:
        """A `Generation` (iterate for steps, `.result()` for the outcome); options are `GenerationRequest`'s:
        sampling, seed, stop, hooks. A prompt too long for the context is cut as `context.py` says."""
        return Generation(self, request(self, prompt_ids, max_tokens, on_notice=on_notice, **options), on_notice)

    def complete(self, prompt_ids: list[int], max_tokens: int, **options) -> GenerationResult:
        """The `GenerationResult` of one run of `generate(prompt_ids, max_tokens, **options)`."""
        return self.generate(prompt_ids, max_tokens, **options).result()

    def generate_batch(self, prompts: Sequence[list[int]], max_tokens: int, *, seeds: Sequence[int | None] | None = None,
                       on_notice: Callable[[str], None] = ignore, **options) -> Iterator[tuple[int, GenerationResult]]:
        """(index, result) of each prompt's run as it finishes, all run as one batch (see generate_batch.py):
        result i is `complete(prompts[i], max_tokens, seed=seeds[i], **options)`'s. Nothing runs until iterated."""
        from .generate_batch import run_batch

        seeds = [None] * len(prompts) if seeds is None else list(seeds)
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds: give one seed per prompt")
        return run_batch([self.generate(p, max_tokens, seed=s, on_notice=on_notice, **options)
                          for p, s in zip(prompts, seeds)])

    def complete_batch(self, prompts: Sequence[list[int]], max_tokens: int, **options) -> list[GenerationResult]:
        """The results of `generate_batch(prompts, max_tokens, **options)`, in the prompts' order."""
        results: list[GenerationResult | None] = [None] * len(prompts)
        for index, result in self.generate_batch(prompts, max_tokens, **options):
            results[index] = result
        return results

    def score(self, ids: list[int], **options):
        """A `Score`: each token's log-probability given those before it; see `score.score` (bos, stride, ...)."""
        from .score import score

        return score(self, ids, **options)
