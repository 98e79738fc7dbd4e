"""The one channel for what is not data: warnings, notes, files saved and errors, all on stderr.

stdout stays data (`llmx ... | other-tool`); Rich is imported only when a notice is shown, so that
`llmx --help` stays fast. Errors are one plain line (`Error: ...`), written by click.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

import click


def warn(message: str) -> None:
    """Something the person should know about the result (a cut prompt, a non-finite number)."""
    show(f"[yellow]warning:[/] {escaped(message)}")


def note(message: str) -> None:
    """Information for the person, such as a one-time packing of weights."""
    show(f"[dim]note:[/] {escaped(message)}")


def saved(path: str) -> None:
    show(f"saved {escaped(path)}")


@contextmanager
def progress(what: str):
    """A progress bar on stderr for long work, fed by the engine's `on_progress(done, total)` callbacks;
    only on a terminal (a file or a pipe gets nothing), and gone when the work is done."""
    if not sys.stderr.isatty():
        yield lambda done, total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .render import stderr_console

    with Progress(TextColumn(escaped(what)), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=stderr_console(), transient=True) as bar:
        task = bar.add_task(what, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@contextmanager
def prefill_progress(after: float = 1.0):
    """`on_progress` for the engine's long prompts: a bar on stderr, on a terminal only, shown once the pass
    has run `after` seconds (a short prompt shows nothing), and gone when the context ends."""
    if not sys.stderr.isatty():
        yield None
        return
    bar = LateBar("reading the prompt", after)
    try:
        yield bar.update
    finally:
        bar.close()


class LateBar:
    """A transient Rich bar that appears only when the work it follows has run `after` seconds."""

    def __init__(self, what: str, after: float):
        self.what, self.after, self.started, self.bar, self.task = what, after, None, None, None

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.started is None or done == 0:
            self.started = now
        if self.bar is None and now - self.started >= self.after and done < total:
            self.open()
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=total)
            if done >= total:
                self.close()

    def open(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from .render import stderr_console

        self.bar = Progress(TextColumn(escaped(self.what)), BarColumn(), MofNCompleteColumn(), TextColumn("tokens"),
                            TimeRemainingColumn(), console=stderr_console(), transient=True)
        self.bar.start()
        self.task = self.bar.add_task(self.what, total=None)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def error(message: str) -> None:
    click.echo(f"Error: {message}", err=True)


def escaped(message: str) -> str:
    from rich.markup import escape

    return escape(message)


def show(markup: str) -> None:
    from .render import stderr_console

    stderr_console().print(markup)
