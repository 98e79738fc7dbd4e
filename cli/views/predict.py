"""The view of `llmx predict`: the next-token table and how many prompt tokens it follows."""

from __future__ import annotations

from .common import count, predictions_table


def predictions_view(data, width: int, color: bool) -> list:
    """A `data.Predictions` as a table of rank, id, token, probability and logit."""
    return [predictions_table(data.predictions, caption=f"after {count(data.prompt_tokens, 'prompt token')}",
                              caption_justify="left")]
