"""Where a command's text comes from, and the options every model command shares."""

from __future__ import annotations

import os
import sys

import click

from .engine.errors import InputError

model_option = click.option(
    "-m", "--model", envvar="LLMX_MODEL", default="openai-community/gpt2", show_default=True,
    help="Hub id (gpt2, gpt2-medium, ... or owner/name), local model directory or .gguf file [env: LLMX_MODEL].")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a view.")


def read_text(text: str | None) -> str:
    """The TEXT argument, or standard input when it is '-' or absent and stdin is not a terminal.

    One trailing newline from stdin (as `echo` adds) is dropped.
    """
    if text is not None and text != "-":
        return text
    if text is None and sys.stdin.isatty():
        raise click.UsageError("no text given: pass TEXT as an argument or pipe it on stdin")
    data = sys.stdin.buffer.read()
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"standard input is not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}): "
                         "convert it first, e.g. with `iconv -t utf-8`") from None
    return decoded[:-2] if decoded.endswith("\r\n") else decoded.removesuffix("\n")


def load_model(name: str):
    from .engine import load

    return load(name)


def warn(message: str) -> None:
    """A notice for the person (stderr, so stdout stays data)."""
    from .render import notice

    notice(message)


def is_terminal() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ
