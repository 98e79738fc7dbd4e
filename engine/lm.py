"""A loaded language model: configuration, weights and tokenizer, with the operations the CLI needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .model import Config, KVCache, Weights, forward
from .nn import log_softmax
from .tokenizer import Tokenizer


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

    def forward(self, ids, cache: KVCache | None = None, **options) -> tuple[np.ndarray, KVCache]:
        """logits, cache = model.forward(ids, cache): see `model.forward` for the options (trace, steer, ...)."""
        return forward(ids, self.weights, self.config, cache, **options)

    def prompt_ids(self, text: str) -> list[int]:
        """Token ids to condition on: the text's, or the start-of-text token for an empty prompt."""
        return self.tokenizer.encode(text) or self.tokenizer.start_ids

    def token_text(self, token_id: int) -> str:
        return self.tokenizer.text(token_id)

    def predict(self, ids: list[int], top: int = 10) -> list[Prediction]:
        """The `top` most likely next tokens after `ids`, most likely first."""
        logits, _ = self.forward(ids[-self.config.n_ctx:])
        return self.top_predictions(logits, top)

    def top_predictions(self, logits: np.ndarray, top: int) -> list[Prediction]:
        top = min(top, len(logits))
        best = np.argpartition(logits, -top)[-top:]
        best = best[np.argsort(-logits[best], kind="stable")]
        probs = np.exp(log_softmax(logits.astype(np.float64)))
        return [Prediction(rank=r + 1, id=int(i), token=self.token_text(int(i)), prob=float(probs[i]),
                           logit=float(logits[i])) for r, i in enumerate(best)]

    def generate(self, prompt_ids: list[int], max_tokens: int, **options):
        """An iterable `Generation`: see `generate.Generation` for the options (sampling, seed, stop, ...)."""
        from .generate import Generation

        return Generation(self, prompt_ids, max_tokens, **options)

    def score(self, ids: list[int], **options):
        """A `Score`: each token's log-probability given those before it; see `score.score` (bos, stride, ...)."""
        from .score import score

        return score(self, ids, **options)
