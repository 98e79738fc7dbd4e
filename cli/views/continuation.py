"""The view of a finished `llmx continue` (for --svg and notebooks; stdout gets the tokens as they come)."""

from __future__ import annotations

from rich.text import Text


def continuation_view(data, width: int, color: bool) -> list:
    """The prompt (bold, in colour) and its continuation, as one text."""
    text = Text(data.prompt or "", style="bold" if color else "")
    text.append(data.text)
    return [text, Text(f"finish reason: {data.finish_reason}", style="dim")]
