"""The logit lens: read the residual stream after each block as if it were the last one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..hooks import Trace
from ..lm import LanguageModel, Prediction, ignore
from .common import resolve_position, token_texts, unembed


def layer_names(n_layer: int) -> list[str]:
    """Names of the lens rows: the stream after the embeddings, then after each block."""
    return ["embed"] + [f"block {i}" for i in range(n_layer)]


@dataclass(frozen=True)
class Lens:
    ids: list[int]  # the input tokens (the last n_ctx of a longer text)
    tokens: list[str]
    layers: list[str]  # row names: "embed", "block 0", ..., "block N-1" (the model's real output)
    positions: list[int]  # the positions read
    top: list[list[list[Prediction]]]  # [layer][index into positions][rank]: next-token guesses


def residual_streams(lm: LanguageModel, ids: list[int]) -> tuple[list[np.ndarray], np.ndarray]:
    """([stream after the embeddings, after block 0, ..., after block N-1], each [n_seq, n_embd];
    the model's own logits for the last position, exactly as `predict` computes them)."""
    last = lm.config.n_layer - 1
    trace = Trace(("blocks.*.resid_pre", f"blocks.{last}.resid_post"))
    logits, _ = lm.forward(ids, hooks=trace)
    streams = [trace[f"blocks.{i}.resid_pre"] for i in range(lm.config.n_layer)]
    return streams + [trace[f"blocks.{last}.resid_post"]], logits


def logit_lens(lm: LanguageModel, ids: list[int], top: int = 1, positions: list[int] | None = None,
               on_notice=ignore) -> Lens:
    """The top-`top` next tokens at every layer and position (or only at `positions`).

    The last row is the model's real output; its last cell is the very computation `predict` runs.
    A text longer than the context keeps its last tokens (context.py); positions count in what is kept.
    """
    ids = lm.fit(ids, on_notice)
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
