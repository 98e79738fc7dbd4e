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
    decoded = decode_utf8(sys.stdin.buffer.read(), "standard input")
    return decoded[:-2] if decoded.endswith("\r\n") else decoded.removesuffix("\n")


def read_file(name: str) -> str:
    """The text of file `name`, or of standard input when it is '-'."""
    if name == "-":
        return decode_utf8(sys.stdin.buffer.read(), "standard input")
    try:
        with open(name, "rb") as f:
            return decode_utf8(f.read(), name)
    except OSError as e:
        raise InputError(f"cannot read {name}: {e.strerror}") from None


def decode_utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{where} is not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}): "
                         "convert it first, e.g. with `iconv -t utf-8`") from None


def load_model(name: str):
    from .engine import load

    return load(name, on_notice=note)


def warn(message: str) -> None:
    """A warning for the person (stderr, so stdout stays data); Rich is imported only when one is shown."""
    from .render import notice

    notice(message)


def note(message: str) -> None:
    """Information for the person, such as a one-time packing of weights (stderr)."""
    from .render import note as show

    show(message)


def is_terminal() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ
