"""The token view of `llmx tokenize`: the tokens in alternating colours (or [brackets]), a table, the count.

`tokens_view` draws it with Rich for SVG and notebooks. On stdout `print_tokens` writes the same lines
itself, in parts, so that a text of a million tokens streams out with bounded memory.
"""

from __future__ import annotations

from rich.cells import cell_len
from rich.text import Text

from .common import count, simple_table, visible

TOKEN_STYLES = ("black on rgb(180,210,255)", "black on rgb(255,220,170)", "black on rgb(190,240,190)",
                "black on rgb(250,200,220)")
TOKENS_AT_ONCE = 10_000  # a long text's tokens are drawn this many at a time, so memory stays bounded


def token_view(shown: list[str], color: bool, first: int = 0) -> Text:
    """Tokens (in their visible form) as text: alternating colours on a terminal, [brackets] without colour.
    `first` is the index of shown[0] in the whole text, so that a view drawn in parts alternates alike."""
    if not color:
        return Text(bracketed(shown))
    view = Text()
    for i, piece in enumerate(shown, first):
        view.append(piece, style=TOKEN_STYLES[i % len(TOKEN_STYLES)])
    return view


def bracketed(shown: list[str]) -> str:
    return "".join(f"[{piece}]" for piece in shown)


def tokens_view(data, width: int, color: bool) -> list:
    """A `data.Tokens` drawn whole: the token view, the table of index, id and piece, the count."""
    table = simple_table()
    for name, justify in (("index", "right"), ("id", "right"), ("piece", "left")):
        table.add_column(name, justify=justify)
    shown = [visible(piece) for piece in data.pieces]
    for i, (token, piece) in enumerate(zip(data.tokens, shown)):
        table.add_row(str(i), str(token.id), piece)
    return [token_view(shown, color), table, Text(count(data.count, "token"))]


def print_tokens(data, console) -> None:
    """The tokens view on `console` (one long line that the terminal wraps, the table, the count), in parts.

    The table is laid out here rather than by Rich (which takes ~0.4 ms a row: minutes and gigabytes for
    the million tokens of a 5 MB text), as `tokens_view`'s table would be."""
    color = console.is_terminal and not console.no_color
    pieces, ids = data.pieces, [t.id for t in data.tokens]
    distinct = {piece: visible(piece) for piece in set(pieces)}  # a long text repeats a few thousand tokens
    for start in range(0, len(pieces), TOKENS_AT_ONCE):
        shown = [distinct[piece] for piece in pieces[start:start + TOKENS_AT_ONCE]]
        if color:
            console.print(token_view(shown, color, start), soft_wrap=True, end="")
        else:  # token_view's text, written straight out: Rich would scan it for control codes again
            console.file.write(bracketed(shown))
    console.print()
    widths = (max(len("index"), len(str(len(ids) - 1))), max([len("id"), *(len(str(i)) for i in set(ids))]),
              max([len("piece"), *map(cell_len, distinct.values())]))
    console.print(Text(token_row(widths, "index", "id", "piece"), style="table.header"), soft_wrap=True)
    console.print("─" * (sum(widths) + 6), soft_wrap=True)
    for start in range(0, len(ids), TOKENS_AT_ONCE):
        part = range(start, min(start + TOKENS_AT_ONCE, len(ids)))
        console.file.write("".join(token_row(widths, i, ids[i], distinct[pieces[i]]) + "\n" for i in part))
    console.print(count(len(ids), "token"))


def token_row(widths: tuple[int, int, int], index, token_id, piece: str) -> str:
    """A line of the tokens table as `simple_table()` draws it (index and id right-aligned, three spaces
    between columns), but without the spaces that pad the last column (unseen on a terminal)."""
    w_index, w_id, _ = widths
    return f"{index:>{w_index}}   {token_id:>{w_id}}   {piece}"


def text_view(data, width: int, color: bool) -> list:
    """Text as it is (tokenize --decode and --truncate): no markup, no wrapping of its own."""
    return [Text(data.text)]
