"""What happens to a text longer than the model's context: one policy for every command.

A model reads at most n_ctx tokens (its context). When a text has more, llmx keeps its LAST tokens and drops
the start, and says so on stderr (through `on_notice`): the end of a text is what the next token depends
on most. `predict`, `explain`, `lens` and `attention` keep the last n_ctx tokens. `continue` keeps room
for the tokens it generates: the prompt keeps its last n_ctx - max_tokens tokens, but never fewer than
half the context (nor fewer than one), so a long generation does not start from almost nothing; when the
window then fills up during generation, it continues from the last half of the window. `score` is the
exception, because it must score every token: it slides windows over the text instead (see `score.py`).
`continue --context` cuts the context's start before the question's (see `prompting.py`).
"""

from __future__ import annotations

from typing import Callable

from .errors import count


def room(n_ids: int, n_ctx: int, reserve: int = 0) -> int:
    """How many of n_ids tokens are kept with `reserve` positions left free for generation."""
    return min(n_ctx, max(n_ctx - reserve, min(n_ids, n_ctx // 2), 1))


def fit(ids: list[int], n_ctx: int, reserve: int = 0) -> tuple[list[int], int]:
    """(the ids to run, how many were dropped from the start): the last `room(...)` tokens of `ids`."""
    keep = room(len(ids), n_ctx, reserve)
    if len(ids) <= keep:
        return list(ids), 0
    return list(ids[-keep:]), len(ids) - keep


def fit_and_tell(ids: list[int], n_ctx: int, on_notice: Callable[[str], None], reserve: int = 0,
                 doing: str = "keeping") -> list[int]:
    """`fit`, telling `on_notice` in one line when tokens were dropped; `doing` words it ("predicting from")."""
    kept, dropped = fit(ids, n_ctx, reserve)
    if dropped and reserve:
        on_notice(f"prompt of {len(ids)} tokens does not fit the model's context of {n_ctx} tokens "
                  f"with the tokens to generate: keeping its last {count(len(kept), 'token')}")
    elif dropped:
        on_notice(f"the text has {len(ids)} tokens, more than the model's context of {n_ctx}: "
                  f"{doing} the last {len(kept)}")
    return kept


def slide(context: list[int], n_ctx: int, on_notice: Callable[[str], None]) -> list[int]:
    """The window to continue from when generation has filled the context: its last half."""
    context = context[-(n_ctx // 2):]
    on_notice(f"context window of {n_ctx} tokens is full: continuing from the last {count(len(context), 'token')}")
    return context
