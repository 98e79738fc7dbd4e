"""All drawing for people happens here, with Rich: token views and tables on stdout, notices on stderr.

The engine hands over data (ids, pieces, probabilities); these functions only lay it out.
Colour appears only on a terminal and never with NO_COLOR (Rich checks both).
"""

from __future__ import annotations

import sys

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

TOKEN_STYLES = ("black on rgb(180,210,255)", "black on rgb(255,220,170)", "black on rgb(190,240,190)",
                "black on rgb(250,200,220)")
VISIBLE = {" ": "·", "\n": "↵", "\t": "→", "\r": "␍"}


def stdout_console() -> Console:
    return Console(file=sys.stdout, highlight=False)


def stderr_console() -> Console:
    return Console(file=sys.stderr, highlight=False)


def notice(message: str) -> None:
    stderr_console().print(f"[yellow]warning:[/] {escape(message)}")


def visible(piece: bytes | str) -> str:
    """A token's text with whitespace made visible; bytes that are not whole characters as \\xNN."""
    text = piece.decode("utf-8", errors="backslashreplace") if isinstance(piece, bytes) else piece
    return "".join(VISIBLE.get(c, c if c.isprintable() else f"\\x{ord(c):02x}") for c in text)


def token_view(pieces: list[bytes], color: bool) -> Text:
    """The text as its tokens: alternating colours on a terminal, [brackets] without colour."""
    view = Text()
    for i, piece in enumerate(pieces):
        if color:
            view.append(visible(piece), style=TOKEN_STYLES[i % len(TOKEN_STYLES)])
        else:
            view.append(f"[{visible(piece)}]")
    return view


def print_tokens(ids: list[int], pieces: list[bytes]) -> None:
    console = stdout_console()
    console.print(token_view(pieces, color=console.is_terminal and not console.no_color))
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("index", justify="right")
    table.add_column("id", justify="right")
    table.add_column("piece")
    for i, (token_id, piece) in enumerate(zip(ids, pieces)):
        table.add_row(str(i), str(token_id), visible(piece))
    console.print(table)
    console.print(f"{len(ids)} token{'s' if len(ids) != 1 else ''}")


def print_predictions(predictions, prompt_tokens: int) -> None:
    console = stdout_console()
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, caption=f"after {prompt_tokens} prompt tokens",
                  caption_justify="left")
    for name in ("rank", "id", "token", "prob", "logit"):
        table.add_column(name, justify="left" if name == "token" else "right")
    for p in predictions:
        table.add_row(str(p.rank), str(p.id), visible(p.token), percent(p.prob), f"{p.logit:.3f}")
    console.print(table)


def percent(p: float) -> str:
    """12.34% for likely tokens; 3.1e-05% keeps the digits of unlikely ones visible."""
    return f"{p:.2%}" if p >= 1e-4 else f"{p * 100:.1e}%"


# Surprisal in bits, from "the model saw it coming" to "the model was astonished": (upper bound, style).
SURPRISAL_STYLES = ((1, "black on rgb(170,230,170)"), (2, "black on rgb(210,240,170)"),
                    (4, "black on rgb(250,240,160)"), (8, "black on rgb(255,210,150)"),
                    (16, "black on rgb(255,170,140)"), (float("inf"), "white on rgb(190,50,50)"))
UNSCORED_STYLE = "dim"


def surprisal_style(bits: float | None) -> str:
    return UNSCORED_STYLE if bits is None else next(style for bound, style in SURPRISAL_STYLES if bits < bound)


def surprisal_legend() -> Text:
    legend = Text("surprisal in bits: ")
    low = 0
    for bound, style in SURPRISAL_STYLES:
        legend.append(f" {low}–{bound} " if bound != float("inf") else f" ≥{low} ", style=style)
        low = bound
    legend.append("  ")
    legend.append(" not scored ", style=UNSCORED_STYLE)
    return legend


def print_score(score) -> None:
    """A `Score`: on a terminal the text coloured by surprisal with a legend; then a table and the totals."""
    console = stdout_console()
    if console.is_terminal and not console.no_color:
        view = Text()
        for t in score.tokens:
            view.append(visible(t.piece), style=surprisal_style(t.bits))
        console.print(view)
        console.print(surprisal_legend())
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for name in ("index", "id", "token", "logprob", "bits"):
        table.add_column(name, justify="left" if name == "token" else "right")
    for i, t in enumerate(score.tokens):
        style = surprisal_style(t.bits) if t.bits is not None else UNSCORED_STYLE
        table.add_row(str(i), str(t.id), visible(t.piece), "—" if t.logprob is None else f"{t.logprob:.3f}",
                      Text("—" if t.bits is None else f"{t.bits:.2f}", style=style))
    console.print(table)
    scored = len(score.scored)
    first = "" if scored == len(score.tokens) else " (the first has no context: --bos scores it too)"
    console.print(f"{scored} of {len(score.tokens)} tokens scored{first}, {score.n_bytes} bytes"
                  + (f", in {score.windows} windows" if score.windows > 1 else ""))
    console.print(f"mean NLL       {score.mean_nll:.4f} nats/token")
    console.print(f"perplexity     {score.perplexity:.2f}")
    console.print(f"bits per byte  {score.bits_per_byte:.4f}")
