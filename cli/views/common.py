"""What every view draws with: visible token text, the table style, shades with their legend, paragraphs."""

from __future__ import annotations

import textwrap

from rich import box
from rich.table import Table
from rich.text import Text

from ..engine.errors import count  # noqa: F401  (re-exported: views say "1 token", "2 tokens" through it)

VISIBLE = {" ": "·", "\n": "↵", "\t": "→", "\r": "␍"}
VISIBLE_TABLE = str.maketrans(VISIBLE)

# Shading by probability always comes with a legend; without colour the numbers are written instead.
SHADES = ("black on rgb(225,235,250)", "black on rgb(170,200,245)", "black on rgb(110,160,235)",
          "white on rgb(50,100,200)", "white on rgb(15,45,135)")
SHADE_EDGES = (0.1, 0.3, 0.5, 0.8)  # upper bounds of the first four shades
SHADE_LABELS = ("<10%", "10–30%", "30–50%", "50–80%", "≥80%")
SCORE_LABELS = ("<0.1", "0.1–0.3", "0.3–0.5", "0.5–0.8", "≥0.8")  # the same shades for scores written 0–1


class Prose(Text):
    """A paragraph, wrapped to whatever width the view was given: it never decides how wide a view must be."""


def visible(piece: bytes | str) -> str:
    """A token's text with whitespace made visible; bytes that are not whole characters as \\xNN."""
    text = piece.decode("utf-8", errors="backslashreplace") if isinstance(piece, bytes) else piece
    text = text.translate(VISIBLE_TABLE)
    return text if text.isprintable() else "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def simple_table(**options) -> Table:
    """The table style of every view: a rule under the header, no outer edge."""
    return Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, **options)


def predictions_table(predictions, **options) -> Table:
    """rank, id, token, probability and logit of next-token predictions."""
    table = simple_table(**options)
    for name in ("rank", "id", "token", "prob", "logit"):
        table.add_column(name, justify="left" if name == "token" else "right")
    for p in predictions:
        table.add_row(str(p.rank), str(p.id), visible(p.token), percent(p.prob), f"{p.logit:.3f}")
    return table


def percent(p: float) -> str:
    """12.34% for likely tokens; 3.1e-05% keeps the digits of unlikely ones visible."""
    return f"{p:.2%}" if p >= 1e-4 else f"{p * 100:.1e}%"


def pct(p: float) -> str:
    """A whole percentage for a small cell; '<1%' rather than a misleading 0%."""
    return f"{round(p * 100)}%" if p >= 0.005 else "<1%"


def clip(text: str, width: int) -> str:
    """The visible form of a token, cut to `width` characters with an ellipsis."""
    text = visible(text)
    return text if len(text) <= width else text[:width - 1] + "…"


def shade(p: float) -> str:
    return SHADES[sum(p >= edge for edge in SHADE_EDGES)]


def shade_legend(what: str, labels: tuple[str, ...] = SHADE_LABELS) -> Text:
    legend = Text(f"{what}: ")
    for style, label in zip(SHADES, labels):
        legend.append(f" {label} ", style=style)
        legend.append(" ")
    return legend


def wrap(text: str, width: int, margin: str = "", style: str = "", hanging: str = "") -> Prose:
    """A paragraph wrapped to the width here, so that no line keeps a trailing space; `margin` starts every
    line, `hanging` every line but the first."""
    return Prose(textwrap.fill(text, max(20, width), initial_indent=margin, subsequent_indent=margin + hanging),
                 style=style)


def cut_note(what: str, shown: int, total: int, fix: str, width: int) -> Text:
    return wrap(f"{what} 0–{shown - 1} of {total} shown; {fix}", width, style="italic")


def position_labels(tokens: list[str], width: int = 8) -> tuple[list[str], int]:
    digits = len(str(len(tokens) - 1))
    labels = [f"{i:>{digits}} {clip(t, width)}" for i, t in enumerate(tokens)]
    return labels, max(len(label) for label in labels) + 1
