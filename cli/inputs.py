"""Where a command's text and model come from: arguments, standard input, files."""

from __future__ import annotations

import sys

import click

from .engine.errors import InputError


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


def load_model(name: str, adapter: str | None = None):
    """The model `name`, with the command's --adapter (see options.model_option) unless `adapter` is given."""
    from .engine import load
    from .notices import note
    from .options import ADAPTER

    ctx = click.get_current_context(silent=True)
    adapter = adapter or (ctx.meta.get(ADAPTER) if ctx is not None else None)
    return load(name, on_notice=note, adapter=adapter)
