"""The options commands share, as decorators: model, --json, --svg with --width, seeds and sampling."""

from __future__ import annotations

import math
import os

import click

DEFAULT_MODEL = "openai-community/gpt2"
MODEL_HELP = ("Hub id (gpt2, gpt2-medium, ... or owner/name), local model directory or .gguf file "
              f"[default: {DEFAULT_MODEL}; env: LLMX_MODEL].")
WIDTH = "llmx.width"  # where --width is kept in the click context's meta, for the command's output


def resolve_model(ctx: click.Context, param, value: str | None) -> str:
    """The model a command uses: its own -m, else `llmx -m` before the command, else LLMX_MODEL, else GPT-2."""
    if value is not None:
        return value
    root = ctx.find_root()
    if root is not ctx and root.params.get("model") is not None:
        return root.params["model"]
    return os.environ.get("LLMX_MODEL") or DEFAULT_MODEL


ADAPTER = "llmx.adapter"  # where --adapter is kept in the click context's meta, for load_model


def keep_adapter(ctx: click.Context, param, value: str | None) -> None:
    ctx.meta[ADAPTER] = value


adapter_option = click.option("--adapter", metavar="DIR", expose_value=False, callback=keep_adapter,
                              type=click.Path(exists=True, file_okay=False),
                              help="Apply the LoRA adapter in DIR (from `llmx finetune` or peft) to the model.")


def model_option(command):
    """-m MODEL and --adapter DIR (a LoRA adapter from `llmx finetune` or peft, applied to MODEL by load_model)."""
    return click.option("-m", "--model", callback=resolve_model, help=MODEL_HELP)(adapter_option(command))
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a view.")
SEED = click.IntRange(0, 2**32 - 1)  # numpy's generators take no negative seeds


def keep_width(ctx: click.Context, param, value: int | None) -> None:
    ctx.meta[WIDTH] = value


def svg_option(command):
    """--svg FILE and --width N, which every view takes."""
    command = click.option("--width", type=click.IntRange(min=20), metavar="N", expose_value=False,
                           callback=keep_width,
                           help="Lay the view out for N columns (default: the terminal's; for --svg, as wide as the "
                                "view needs to show everything, at least 80).")(command)
    return click.option("--svg", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
                        help="Also save the view, in colour, as an SVG image in FILE.")(command)


def seed_option(help: str, default: int | None = None):
    """--seed, a number from 0 to 2**32-1, with the command's own help."""
    return click.option("--seed", default=default, show_default=default is not None, type=SEED, help=help)


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
temperature_option = click.option(
    "--temperature", "-t", default=1.0, show_default=True, type=TEMPERATURE,
    help="Sampling temperature: 0 always picks the most likely token, else a number from 1e-06 up.")


def sampling_options(command):
    """--temperature, --top-k and --top-p, for the commands that sample."""
    command = click.option("--top-p", type=FiniteFloat(0, 1, min_open=True),
                           help="Sample only from the most likely tokens whose probabilities add up to p.")(command)
    command = click.option("--top-k", type=click.IntRange(min=1),
                           help="Sample only from the k most likely tokens.")(command)
    return temperature_option(command)


def spread_values(args: list[str], names: tuple[str, ...]) -> list[str]:
    """`--data a.txt b.txt --steps 3` -> `--data a.txt --data b.txt --steps 3`: after one of `names`, every
    argument up to the next one that starts with "-" is another value of that (multiple=True) option."""
    out, current = [], None
    for arg in args:
        if arg.startswith("-"):
            current = arg if arg in names else None
        elif current is not None and out[-1] != current:
            out.append(current)  # a second, third, ... value: repeat the option before it
        out.append(arg)
    return out


def several_values(base: type, *names: str) -> type:
    """A click command (or group) class whose options `names` take one or more values in a row, as
    `--data a.txt b.txt` (click's own options take one value per occurrence)."""

    class Command(base):
        def parse_args(self, ctx, args):
            return super().parse_args(ctx, spread_values(list(args), names))

    return Command
