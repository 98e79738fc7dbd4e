"""Checks and small helpers shared by the analyses: each failure is one line that says what is allowed."""

from __future__ import annotations

import numpy as np

from ..errors import InputError, count
from ..lm import LanguageModel
from ..model import norm


def check_length(lm: LanguageModel, ids: list[int]) -> None:
    """For inputs that cannot be cut (steering prompts): a text longer than the context is an error."""
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
        raise InputError(f"position {position} is outside the text's {count(n_seq, 'token')}: "
                         f"use 0..{n_seq - 1}, or -1 for the last")
    return position % n_seq


def token_texts(lm: LanguageModel, ids) -> list[str]:
    return [lm.token_text(int(i)) for i in ids]


def unembed(x: np.ndarray, lm: LanguageModel) -> np.ndarray:
    """Residual stream to logits the way the model's head does it: final norm, then the unembedding."""
    return norm(x, lm.weights.ln_final, lm.config) @ lm.weights.unembed.T  # [n, n_embd] -> [n, n_vocab]


def is_tied(lm: LanguageModel) -> bool:
    """Whether the unembedding is the embedding matrix itself (GPT-2 ties them; many Llamas do too)."""
    return lm.weights.unembed is lm.weights.embed or np.may_share_memory(lm.weights.unembed, lm.weights.embed)


def single_token(lm: LanguageModel, text: str, other: str = "an id with --id") -> int:
    """The id of `text` when it is exactly one token; otherwise an error listing its tokens (and `other` way)."""
    tok = lm.tokenizer
    ids = tok.encode(text)
    if tok.add_bos and ids[:1] == [tok.bos_id]:
        ids = ids[1:]
    if len(ids) != 1:
        pieces = ", ".join(f"{lm.token_text(i)!r} ({i})" for i in ids) or "none"
        raise InputError(f"{text!r} is {count(len(ids), 'token')}, not one: {pieces}; give one of them, or {other}")
    return ids[0]
