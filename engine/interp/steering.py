"""Steering by activation addition (ActAdd, Turner et al. 2023): a hook adds coef * (add - sub) to the
residual stream entering a block, at the positions of the steering prompts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..hooks import Hooks, Trace, add_at_positions
from ..lm import LanguageModel, ignore
from ..sampling import Sampling
from .common import check_layer, check_length, token_texts


def with_start(lm: LanguageModel, ids: list[int]) -> list[int]:
    """ids after the model's start token, as TransformerLens (and so ActAdd) feeds every prompt."""
    start = lm.tokenizer.start_ids[:1]
    return ids if ids[:1] == start else start + ids


def pad_id(lm: LanguageModel) -> int:
    """ActAdd pads the shorter steering prompt with spaces; a model whose space is not one token, with end-of-text."""
    ids = lm.tokenizer.encode(" ")
    ids = ids[1:] if lm.tokenizer.add_bos and ids[:1] == [lm.tokenizer.bos_id] else ids
    return ids[0] if len(ids) == 1 else min(lm.tokenizer.eos_ids)


def steering_vector(lm: LanguageModel, add: str, sub: str, layer: int) -> tuple[np.ndarray, list[int], list[int]]:
    """(resid_pre[layer](add) - resid_pre[layer](sub) as [n_pos, n_embd], add ids, sub ids), both padded
    to the same length and after the start token."""
    check_layer(lm, layer)
    add_ids, sub_ids = with_start(lm, lm.tokenizer.encode(add)), with_start(lm, lm.tokenizer.encode(sub))
    n = max(len(add_ids), len(sub_ids))
    add_ids, sub_ids = (ids + [pad_id(lm)] * (n - len(ids)) for ids in (add_ids, sub_ids))
    check_length(lm, add_ids)
    streams = []
    for ids in (add_ids, sub_ids):
        trace = Trace((f"blocks.{layer}.resid_pre",))
        lm.forward(ids, hooks=trace)
        streams.append(trace[f"blocks.{layer}.resid_pre"])
    return streams[0] - streams[1], add_ids, sub_ids


def steering_hooks(layer: int, delta: np.ndarray) -> Hooks:
    """Hooks adding delta [n_pos, n_embd] to the stream entering block `layer` at absolute positions 0..n_pos-1."""
    return add_at_positions(f"blocks.{layer}.resid_pre", delta)


@dataclass(frozen=True)
class Continuation:
    ids: list[int]
    text: str
    finish_reason: str


@dataclass(frozen=True)
class Steering:
    prompt: str
    prompt_ids: list[int]  # the prompt after the start token: both continuations condition on it
    add_ids: list[int]  # the steering prompts, padded to the same length, after the start token
    sub_ids: list[int]
    add_tokens: list[str]
    sub_tokens: list[str]
    layer: int
    coef: float
    vector_norms: list[float]  # norm of coef * (add - sub) at each position it is added to
    seed: int | None
    steered: Continuation
    plain: Continuation


def steered_and_plain(lm: LanguageModel, prompt_ids: list[int], hooks: Hooks, max_tokens: int,
                      sampling: Sampling | None, seed: int | None, on_notice) -> list[Continuation]:
    """[steered, plain]: `prompt_ids` continued with `hooks` and without, with the same seed."""
    runs = []
    for run_hooks in (hooks, None):
        result = lm.complete(prompt_ids, max_tokens, sampling=sampling or Sampling(), seed=seed, hooks=run_hooks,
                             on_notice=on_notice)
        runs.append(Continuation(result.ids, result.text, result.finish_reason))
    return runs


def steer(lm: LanguageModel, prompt: str, add: str, sub: str, layer: int, coef: float, max_tokens: int = 40,
          sampling: Sampling | None = None, seed: int | None = None, on_notice=ignore) -> Steering:
    """Continue `prompt` twice with the same seed: with coef * (add - sub) added at block `layer`, and without."""
    diff, add_ids, sub_ids = steering_vector(lm, add, sub, layer)
    delta = (np.float32(coef) * diff).astype(np.float32)
    prompt_ids = with_start(lm, lm.prompt_ids(prompt))
    runs = steered_and_plain(lm, prompt_ids, steering_hooks(layer, delta), max_tokens, sampling, seed, on_notice)
    return Steering(prompt=prompt, prompt_ids=prompt_ids, add_ids=add_ids, sub_ids=sub_ids,
                    add_tokens=token_texts(lm, add_ids),
                    sub_tokens=token_texts(lm, sub_ids), layer=layer, coef=coef,
                    vector_norms=np.linalg.norm(delta, axis=-1).tolist(), seed=seed, steered=runs[0], plain=runs[1])
