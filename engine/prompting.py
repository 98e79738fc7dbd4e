"""Prompts built from parts: a context (retrieved passages, a document) before a question.

The template is CONTEXT (trailing whitespace removed) + "\n\n" + QUESTION. When the two and the
tokens to generate do not fit the window, tokens are dropped from the start of the context,
never from the question, and the caller is told how many.
"""

from __future__ import annotations

from dataclasses import dataclass

SEPARATOR = "\n\n"


@dataclass(frozen=True)
class ContextPrompt:
    ids: list[int]  # the prompt's token ids
    context_tokens: int  # tokens the whole context has
    dropped: int  # tokens cut from the start of the context to fit


def with_context(tokenizer, context: str, question: str, budget: int) -> ContextPrompt:
    """Token ids of context + SEPARATOR + question, keeping at most `budget` tokens by cutting the context.

    If the question alone needs more than `budget`, the whole context is dropped and the question kept.
    """
    context = context.rstrip()
    if not context:
        return ContextPrompt(tokenizer.encode(question), 0, 0)
    head = tokenizer.encode(context)
    lead = head[:1] if tokenizer.add_bos and head[:1] == [tokenizer.bos_id] else []  # Llama's BOS stays first
    head = head[len(lead):]
    tail = tokenizer.encode(SEPARATOR + question)[len(lead):]
    room = max(budget - len(lead) - len(tail), 0)
    dropped = max(len(head) - room, 0)
    return ContextPrompt(lead + head[dropped:] + tail, len(head), dropped)
