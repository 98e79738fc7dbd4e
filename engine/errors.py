"""The errors the engine raises: each message says what went wrong and what to do about it."""


def count(n: int, noun: str) -> str:
    """'1 token', '7 tokens': a number and its noun, singular or plural, for messages."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class LlmxError(Exception):
    """Base class: a problem a person can fix, explained in one line."""


class ModelNotFoundError(LlmxError):
    """No model by that name: not a local path, not on the Hub, or not in the offline cache."""


class CheckpointError(LlmxError):
    """A model's files are missing, truncated, or not the architecture they claim to be."""


class TokenizerError(LlmxError):
    """The tokenizer's files are missing or of an unknown kind."""


class InputError(LlmxError):
    """A value given to the engine is out of range (a token id outside the vocabulary, ...)."""


class SaeError(LlmxError):
    """A sparse autoencoder's folder is missing, damaged, of a kind llmx does not run, or made for another model."""
