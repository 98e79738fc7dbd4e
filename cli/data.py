"""The data each command builds, and the one serializer that prints it as JSON (--json, --jsonl, notebooks).

A command's data object is a frozen dataclass (the engine's, like `Lens`, or one of the few here) or a dict.
`as_data` turns it into plain JSON-ready Python; fields marked `HIDDEN` are there for the view only (a token's
raw bytes, say) and `OPTIONAL` ones are left out when None. `to_json` writes that as one line of valid JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field

LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # after json.loads, surrogate pairs are already one character
HIDDEN = {"json": "hidden"}  # a field the view reads but JSON does not carry
OPTIONAL = {"json": "optional"}  # a field JSON leaves out when it is None


def as_data(obj):
    """Dataclasses, lists and NumPy values as plain JSON-ready Python."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: as_data(getattr(obj, f.name)) for f in dataclasses.fields(obj) if shown(f, obj)}
    if isinstance(obj, dict):
        return {key: as_data(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [as_data(x) for x in obj]
    if hasattr(obj, "tolist"):  # a NumPy array or scalar
        return obj.tolist()
    return obj


def shown(f: dataclasses.Field, obj) -> bool:
    kind = f.metadata.get("json")
    return kind != "hidden" and not (kind == "optional" and getattr(obj, f.name) is None)


def record(model: str | None, data) -> dict:
    """What --json prints for `data`: {"model": ..., the data's fields}, or only the fields without a model."""
    return as_data(data) if model is None else {"model": model, **as_data(data)}


def to_json(obj) -> tuple[str, list[str]]:
    """`obj` as one line of valid JSON, and the paths (like .perplexity) of the non-finite numbers written as null.

    Non-ASCII text is written as it is; a lone surrogate (not a character, so not encodable as UTF-8)
    is written as its \\uXXXX escape, which is how it came in.
    """
    obj = as_data(obj)
    nonfinite: list[str] = []
    try:
        text = json.dumps(obj, ensure_ascii=False, allow_nan=False)
    except ValueError:
        text = json.dumps(finite(obj, "", nonfinite), ensure_ascii=False, allow_nan=False)
    return LONE_SURROGATE.sub(lambda m: f"\\u{ord(m[0]):04x}", text), nonfinite


def finite(obj, path: str, nonfinite: list[str]):
    """`obj` with every NaN and infinity replaced by None; their paths appended to `nonfinite`."""
    if isinstance(obj, float) and not math.isfinite(obj):
        nonfinite.append(path or ".")
        return None
    if isinstance(obj, dict):
        return {key: finite(value, f"{path}.{key}", nonfinite) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(value, f"{path}[{i}]", nonfinite) for i, value in enumerate(obj)]
    return obj


# --- the data of the commands whose results are not already an engine dataclass ----------------------------


@dataclass(frozen=True)
class Token:
    id: int
    text: str  # the token's text (U+FFFD for a piece of a character)


@dataclass(frozen=True)
class Tokens:
    """`llmx tokenize TEXT`: the tokens of a text."""
    tokens: list[Token]
    count: int
    pieces: list[bytes] = field(metadata=HIDDEN)  # each token's bytes, for the view


@dataclass(frozen=True)
class Decoded:
    """`llmx tokenize --decode IDS`: the text of token ids."""
    ids: list[int]
    text: str


@dataclass(frozen=True)
class Truncated:
    """`llmx tokenize --truncate N TEXT`: the text of the first N tokens."""
    text: str
    count: int


@dataclass(frozen=True)
class Predictions:
    """`llmx predict TEXT`: the most likely next tokens."""
    prompt_tokens: int
    predictions: list  # of engine.lm.Prediction


@dataclass(frozen=True)
class ScoredToken:
    id: int
    text: str
    logprob: float | None  # natural log of p(token | tokens before it); None when not scored
    bits: float | None  # surprisal, -log2 p
    piece: bytes = field(metadata=HIDDEN)


@dataclass(frozen=True)
class Scores:
    """`llmx score TEXT`: each token's log-probability and the totals (see engine.score.Score)."""
    tokens: list[ScoredToken]
    scored_tokens: int
    bytes: int
    mean_nll: float
    perplexity: float
    bits_per_byte: float
    windows: int


@dataclass(frozen=True)
class Continued:
    """`llmx continue TEXT`: the continuation; with --echo its prompt too."""
    prompt: str | None = field(metadata=OPTIONAL)
    text: str
    ids: list[int]
    finish_reason: str


@dataclass(frozen=True)
class CachedModel:
    id: str
    size_on_disk: int
    path: str


@dataclass(frozen=True)
class Models:
    """`llmx models`: the models in the Hugging Face cache and the short names."""
    cached: list[CachedModel]
    short_names: dict[str, str]


def tokens_data(tokenizer, ids: list[int]) -> Tokens:
    return Tokens([Token(i, tokenizer.text(i)) for i in ids], len(ids), [tokenizer.piece(i) for i in ids])


def scores_data(score) -> Scores:
    """An engine `Score` as the data `llmx score` prints."""
    tokens = [ScoredToken(t.id, t.text, t.logprob, t.bits, t.piece) for t in score.tokens]
    return Scores(tokens, len(score.scored), score.n_bytes, score.mean_nll, score.perplexity, score.bits_per_byte,
                  score.windows)


def continued_data(generation, prompt: str | None = None) -> Continued:
    return Continued(prompt, generation.text, generation.ids, generation.finish_reason)


def models_data(cached, short_names: dict[str, str]) -> Models:
    return Models([CachedModel(m.repo_id, m.size_on_disk, str(m.snapshot)) for m in cached], dict(short_names))
