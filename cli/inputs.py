"""Where a command's text comes from, and the options every model command shares."""

from __future__ import annotations

import math
import os
import sys

import click

from .engine.errors import InputError

DEFAULT_MODEL = "openai-community/gpt2"
MODEL_HELP = ("Hub id (gpt2, gpt2-medium, ... or owner/name), local model directory or .gguf file "
              f"[default: {DEFAULT_MODEL}; env: LLMX_MODEL].")


def resolve_model(ctx: click.Context, param, value: str | None) -> str:
    """The model a command uses: its own -m, else `llmx -m` before the command, else LLMX_MODEL, else GPT-2."""
    if value is not None:
        return value
    root = ctx.find_root()
    if root is not ctx and root.params.get("model") is not None:
        return root.params["model"]
    return os.environ.get("LLMX_MODEL") or DEFAULT_MODEL


model_option = click.option("-m", "--model", callback=resolve_model, help=MODEL_HELP)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a view.")
SEED = click.IntRange(0, 2**32 - 1)  # numpy's generators take no negative seeds


class Temperature(click.ParamType):
    """0 (greedy) or a finite number from the engine's MIN_TEMPERATURE up: below it, logits / T overflow."""

    name = "float"

    def convert(self, value, param, ctx) -> float:
        from .engine.sampling import MIN_TEMPERATURE  # imported here: NumPy loads only when a command runs

        number = click.FLOAT.convert(value, param, ctx)
        if number != 0 and not MIN_TEMPERATURE <= number < math.inf:
            self.fail(f"{value!r}: give 0 (always the most likely token) or a finite number from "
                      f"{MIN_TEMPERATURE:g} up", param, ctx)
        return number


class FiniteFloat(click.FloatRange):
    """A FloatRange that also refuses nan and inf (click's range checks let nan through)."""

    def convert(self, value, param, ctx) -> float:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


TEMPERATURE = Temperature()


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
