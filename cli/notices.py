"""The one channel for what is not data: warnings, notes, files saved and errors, all on stderr.

stdout stays data (`llmx ... | other-tool`); Rich is imported only when a notice is shown, so that
`llmx --help` stays fast. Errors are one plain line (`Error: ...`), written by click.
"""

from __future__ import annotations

import click


def warn(message: str) -> None:
    """Something the person should know about the result (a cut prompt, a non-finite number)."""
    show(f"[yellow]warning:[/] {escaped(message)}")


def note(message: str) -> None:
    """Information for the person, such as a one-time packing of weights."""
    show(f"[dim]note:[/] {escaped(message)}")


def saved(path: str) -> None:
    show(f"saved {escaped(path)}")


def error(message: str) -> None:
    click.echo(f"Error: {message}", err=True)


def escaped(message: str) -> str:
    from rich.markup import escape

    return escape(message)


def show(markup: str) -> None:
    from .render import stderr_console

    stderr_console().print(markup)
