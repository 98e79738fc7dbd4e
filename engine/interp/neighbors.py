"""Neighbours in the embedding matrix, and what a token's embedding alone predicts through the unembedding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..lm import LanguageModel, Prediction
from .common import is_tied, unembed


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
