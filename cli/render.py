"""The one module that owns Rich's consoles: views go to stdout (for people) and into SVG and HTML (coloured),
notices to stderr (see notices.py).

A view is a function `(data, width, color) -> list of renderables` (see views/); `present` draws one.
Colour appears only on a terminal and never with NO_COLOR (Rich checks both).
"""

from __future__ import annotations

import io
import re
import sys

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from .views.common import Prose

SPACES_BEFORE_LINE_END = re.compile(r" +\n")
SVG_MIN_WIDTH = 80  # columns of an SVG whose view would fit in fewer: its paragraphs wrap there
UNLIMITED = 10_000  # a width at which every view shows all it has
JUPYTER_HTML = ('<pre style="white-space:pre;overflow-x:auto;line-height:normal;'
                "font-family:Menlo,'DejaVu Sans Mono',consolas,'Courier New',monospace\">{code}</pre>")


class LineEndsStripped:
    """A text stream that drops the spaces before each line end: Rich pads table cells out to the column's
    width, which a terminal hides but a file or a pipe keeps. Spaces at the end of one write are held back
    until the next shows whether a line end follows them."""

    def __init__(self, stream):
        self.stream = stream
        self.held = ""

    def write(self, text: str) -> int:
        text = self.held + text
        kept = text.rstrip(" ")
        self.held = text[len(kept):]
        self.stream.write(SPACES_BEFORE_LINE_END.sub("\n", kept))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", "utf-8")


def stdout_console() -> Console:
    """Rich on stdout, at the terminal's width; into a file or a pipe without trailing spaces."""
    console = Console(file=sys.stdout, highlight=False)
    if not console.is_terminal:
        console.file = LineEndsStripped(sys.stdout)
    return console


def stderr_console() -> Console:
    """Rich on stderr; into a file or a pipe a message stays one line instead of being cut at 80 columns."""
    console = Console(file=sys.stderr, highlight=False)
    console.soft_wrap = not console.is_terminal
    return console


def in_colour(console: Console) -> bool:
    return console.is_terminal and not console.no_color


def present(build, svg: str | None = None, *, to_stdout: bool = True, title: str = "llmx",
            width: int | None = None) -> None:
    """Print the view `build(width, color)` on stdout, and save it, coloured, as an SVG when `svg` is a path.

    Both are laid out for `width` columns when it is given. Otherwise stdout takes the terminal's width
    (80 in a pipe), and the SVG the width its view needs to show everything, at least SVG_MIN_WIDTH."""
    if to_stdout:
        console = stdout_console()
        if width is not None:
            console.width = width
        for part in build(console.width, in_colour(console)):
            console.print(part)
    if svg:
        save_svg(build, svg, title, width)


def recorded(build, width: int | None = None) -> Console:
    """A console that has drawn the view, coloured, at `width` columns or the view's natural width."""
    recorder = Console(file=io.StringIO(), record=True, width=width or natural_width(build), force_terminal=True,
                       color_system="truecolor", no_color=False, highlight=False)
    for part in build(recorder.width, True):
        recorder.print(part)
    return recorder


def save_svg(build, path: str, title: str = "llmx", width: int | None = None) -> None:
    from .notices import saved

    recorded(build, width).save_svg(path, title=title)
    saved(path)


def html(build, width: int | None = None) -> str:
    """The view, coloured, as HTML for a notebook (the <pre> block Rich's own Jupyter support writes)."""
    return recorded(build, width).export_html(inline_styles=True, code_format=JUPYTER_HTML)


def plain(build, width: int) -> str:
    """The view without colour, as it would print into a pipe `width` columns wide."""
    out = io.StringIO()
    console = Console(file=LineEndsStripped(out), width=width, no_color=True, highlight=False, color_system=None)
    for part in build(width, False):
        console.print(part)
    return out.getvalue()


def natural_width(build) -> int:
    """The columns a view needs to show every grid column and table cell whole: its widest part when laid
    out without limit. Paragraphs and expanding tables take the width they are given, so they do not count."""
    console = Console(file=io.StringIO(), width=UNLIMITED)
    widths = [Measurement.get(console, console.options, part).maximum for part in build(UNLIMITED, True)
              if not isinstance(part, Prose) and not (isinstance(part, Table) and part.expand)]
    return max([SVG_MIN_WIDTH, *widths])
