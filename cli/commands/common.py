"""How every command writes its result: the data as JSON (--json), or its view on stdout, and --svg."""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial

import click

from ..data import record, to_json
from ..notices import warn
from ..options import WIDTH


def emit_json(obj) -> None:
    """`obj` as one line of JSON: non-finite numbers become null, with a warning naming them (see data.to_json)."""
    line, nonfinite = to_json(obj)
    for path in nonfinite:
        warn(f"{path} is not a finite number, which JSON cannot hold: written as null")
    click.echo(line)


def output(model: str | None, data, view, as_json: bool, svg: str | None = None, title: str = "llmx",
           print_view=None) -> None:
    """--json: the data (with the model's name) as JSON; else the view `view(data, width, color)` on stdout,
    or `print_view(data)` for a view that streams. --svg FILE: the view, coloured, also into FILE."""
    if as_json:
        emit_json(record(model, data))
    elif print_view is not None:
        print_view(data)
    drawn_here = not as_json and print_view is None
    if drawn_here or svg:
        from ..render import present

        with svg_errors(svg):
            present(partial(view, data), svg, to_stdout=drawn_here, title=title, width=current_width())


def current_width() -> int | None:
    """--width N of the command running, if it has one and it was given."""
    ctx = click.get_current_context(silent=True)
    return None if ctx is None else ctx.meta.get(WIDTH)


@contextmanager
def svg_errors(svg: str | None):
    """A file that cannot be written as click's one-line error naming it."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as e:
        raise click.FileError(svg, e.strerror) from None
