"""The errors the engine raises: each message says what went wrong and what to do about it."""


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
