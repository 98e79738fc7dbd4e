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


def size(n_bytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    raise AssertionError("unreachable")


def print_models(cached, short_names: dict[str, str]) -> None:
    console = stdout_console()
    if cached:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        table.add_column("cached model")
        table.add_column("size", justify="right")
        table.add_column("path")
        for model in cached:
            table.add_row(model.repo_id, size(model.size_on_disk), str(model.snapshot))
        console.print(table)
    else:
        console.print("no models in the Hugging Face cache yet (the first command that needs one downloads it)")
    cached_ids = {model.repo_id for model in cached}
    console.print()
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("short name")
    table.add_column("Hub id")
    table.add_column("cached")
    for short, repo in short_names.items():
        table.add_row(short, repo, "yes" if repo in cached_ids else "")
    console.print(table)


def print_description(info: dict) -> None:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in info.items():
        if key == "file_size":
            value = size(value)
        elif key == "parameters":
            value = f"{value:,} ({value / 1e6:.0f}M)"
        table.add_row(key.replace("_", " "), str(value))
    stdout_console().print(table)
