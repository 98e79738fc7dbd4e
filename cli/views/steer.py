"""The view of `llmx steer`: the steered and the plain continuation, side by side when they fit."""

from __future__ import annotations

from rich.text import Text

from .common import count, simple_table, visible, wrap


def steer_view(st, width: int, color: bool) -> list:
    """Steered and plain continuations of the same prompt with the same seed, side by side when they fit."""
    add = "".join(visible(t) for t in st.add_tokens[1:])  # after the start token
    sub = "".join(visible(t) for t in st.sub_tokens[1:])
    norms = ", ".join(f"{x:.1f}" for x in st.vector_norms)
    lines = [wrap(f"Steering vector: ({add!r} − {sub!r}) × {st.coef:g}, the difference of the two prompts' "
                  f"residual streams entering block {st.layer}, each after the start token "
                  f"{visible(st.add_tokens[0])} and padded to {count(len(st.add_tokens), 'token')}. It is added to "
                  f"the prompt's stream there at positions 0–{len(st.vector_norms) - 1} (lengths {norms}); "
                  f"both continuations use seed {st.seed}.", width), Text()]
    return lines + side_by_side(st, width, color)


def side_by_side(st, width: int, color: bool) -> list:
    """The steered and the plain continuation (`st.steered`, `st.plain`, after `st.prompt`) in two columns,
    or one after the other below 80 columns."""
    texts = []
    for run in (st.steered, st.plain):
        t = Text(st.prompt, style="bold" if color else "")
        t.append(run.text)
        texts.append(t)
    if width < 80:
        return [Text("steered:", style="bold"), texts[0], Text(), Text("plain:", style="bold"), texts[1]]
    table = simple_table(expand=True)
    table.add_column("steered", ratio=1, overflow="fold")
    table.add_column("plain", ratio=1, overflow="fold")
    table.add_row(*texts)
    return [table]

