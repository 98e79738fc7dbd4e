"""SIGTERM for a command that writes as it goes (`llmx continue` streaming tokens): the write being made is
finished and flushed, then `Terminated` ends the command with status 143 (see main.py); batch mode's
result lines (batch.py) are written the same way."""

from __future__ import annotations

import signal
from contextlib import contextmanager


class Terminated(BaseException):
    """SIGTERM arrived: stop after the current write (a BaseException, like KeyboardInterrupt, so that no
    `except Exception` on the way swallows it)."""


@contextmanager
def terminate_between_writes():
    """Yields `writing`, a context manager around one write: a SIGTERM that arrives during it raises
    `Terminated` when the write is done; one that arrives at any other time raises it at once. Outside
    the main thread, where signals cannot be caught, SIGTERM keeps its default."""
    state = {"writing": False, "terminated": False}

    def on_sigterm(signum, frame):
        state["terminated"] = True
        if not state["writing"]:
            raise Terminated

    @contextmanager
    def writing():
        state["writing"] = True
        try:
            yield
        finally:
            state["writing"] = False
        if state["terminated"]:
            raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread
        previous = None
    try:
        yield writing
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
