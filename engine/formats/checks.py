"""Checks for values read from model files: counts, positive numbers and token ids, each failing with
a CheckpointError that names the key, the value and what to do."""

from __future__ import annotations

from ..errors import CheckpointError

# Largest value accepted for a count read from a model file (layers, heads, widths, vocabulary), and for a
# context length: larger ones are damage, and would make the engine allocate or loop for ever.
MAX_COUNT = 1 << 31
MAX_CONTEXT = 1 << 24


def count(values: dict, key: str, where: str, *, default: int | None = None, limit: int = MAX_COUNT) -> int:
    """values[key] as a whole number from 1 to `limit`; `default` when the key is missing or null."""
    value = values.get(key)
    if value is None:
        value = default
    if value is None:
        raise CheckpointError(f"{where} lacks {key!r}, which such a model's configuration has: is the file complete?")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= limit:
        raise CheckpointError(f"{where}: {key} is {short(value)}, but must be a whole number from 1 to {limit}: "
                              "the file is damaged; download or convert it again")
    return value


def positive_float(values: dict, key: str, where: str, *, default: float) -> float:
    value = values.get(key)
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise CheckpointError(f"{where}: {key} is {short(value)}, but must be a positive number: "
                              "the file is damaged; download or convert it again")
    return float(value)


def check_token_ids(ids: dict, n_vocab: int, where: str) -> None:
    """Special token ids (one id, a list of ids, or None) inside the vocabulary [0, n_vocab)."""
    for key, value in ids.items():
        for token in value if isinstance(value, list) else [value]:
            if token is not None and (isinstance(token, bool) or not isinstance(token, int)
                                      or not 0 <= token < n_vocab):
                raise CheckpointError(f"{where}: {key} is {short(value)}, outside the vocabulary of {n_vocab} "
                                      "tokens: the file is damaged; download or convert it again")


def short(value) -> str:
    """A value from a file for a message: its repr, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
