"""Commands that look inside the model: explain, lens, attention, heads, neighbors, steer.

Each parses, calls `llmx.engine.interp`, and hands the result to a view in `render.py` (or prints it as JSON).
"""

from __future__ import annotations

import dataclasses
from functools import partial

import click

from .core import emit_json
from .inputs import SEED, TEMPERATURE, FiniteFloat, json_option, load_model, model_option, read_text, warn

WIDTH = "llmx.width"  # where --width is kept in the click context's meta, for show()


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
layer_option = click.option("--layer", "-l", required=True, type=click.IntRange(min=0),
                            help="Block to look at, counted from 0.")


def as_data(obj):
    """Dataclasses, lists and NumPy values as plain JSON-ready Python."""
    import numpy as np

    if dataclasses.is_dataclass(obj):
        return {f.name: as_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [as_data(x) for x in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def show(model: str, data, view, svg: str | None, as_json: bool, title: str) -> None:
    """JSON of `data` or the view on stdout; the view also into `svg` when given."""
    from .render import present

    if as_json:
        emit_json({"model": model, **(data if isinstance(data, dict) else as_data(data))})
    try:
        present(view, svg, to_stdout=not as_json, title=title, width=click.get_current_context().meta.get(WIDTH))
    except OSError as e:
        raise click.FileError(svg, e.strerror) from None


@click.command(epilog="""\b
Examples:
  llmx explain "The capital of France is"
  llmx explain "Hullo, my name is" --top 10 --svg journey.svg
""")
@click.argument("text", required=False)
@model_option
@click.option("--top", default=5, show_default=True, type=click.IntRange(min=1), help="How many next tokens to show.")
@svg_option
@json_option
def explain(text, model, top, svg, as_json):
    """Follow TEXT through the model step by step, from tokens to the next-token probabilities.

    TEXT is read from stdin when it is '-' or absent.
    """
    from .engine.interp import explain as run
    from .render import explain_view

    text = read_text(text)
    lm = load_model(model)
    ex = run(lm, lm.prompt_ids(text), top, on_notice=warn)
    show(model, ex, partial(explain_view, ex), svg, as_json, "llmx explain")


@click.command(epilog="""\b
Examples:
  llmx lens "The Eiffel Tower is in the city of"
  llmx lens "The Eiffel Tower is in the city of" --position -1 --top 5
  llmx lens "Hullo, my name is" --json | jq '.top[-1][-1][0]'
""")
@click.argument("text", required=False)
@model_option
@click.option("--position", "-p", type=int, help="Show the top tokens at every layer for this position (-1: last).")
@click.option("--top", type=click.IntRange(min=1), help="Tokens per cell: 5 with --position, else 1.")
@svg_option
@json_option
def lens(text, model, position, top, svg, as_json):
    """The logit lens: what the model would predict after each layer, at every position of TEXT.

    Rows are the residual stream after the embeddings and after each block, read through the final
    norm and the unembedding; the last row is the model's real prediction. TEXT is read from stdin
    when it is '-' or absent.
    """
    from .engine.interp import logit_lens
    from .render import lens_position_view, lens_view

    text = read_text(text)
    lm = load_model(model)
    top = top or (5 if position is not None else 1)
    result = logit_lens(lm, lm.prompt_ids(text), top, None if position is None else [position], on_notice=warn)
    view = lens_view if position is None else lens_position_view
    show(model, result, partial(view, result), svg, as_json, "llmx lens")


@click.command(epilog="""\b
Examples:
  llmx attention "When Mary and John went to the store, John gave a drink to" --layer 9
  llmx attention "Hullo, my name is" --layer 0 --head 3 --svg head.svg
""")
@click.argument("text", required=False)
@model_option
@layer_option
@click.option("--head", type=click.IntRange(min=0),
              help="One head as a full heatmap; without it, every head of the block.")
@svg_option
@json_option
def attention(text, model, layer, head, svg, as_json):
    """Attention patterns of block --layer over TEXT: which earlier tokens each token reads.

    TEXT is read from stdin when it is '-' or absent.
    """
    from .engine.interp import attention as run
    from .render import attention_view

    text = read_text(text)
    lm = load_model(model)
    result = run(lm, lm.prompt_ids(text), layer, head, on_notice=warn)
    show(model, result, partial(attention_view, result), svg, as_json, "llmx attention")


@click.command(epilog="""\b
Examples:
  llmx heads
  llmx heads --seq-len 30 --seed 1 --top 20 --json | jq '.heads[0]'
""")
@model_option
@click.option("--seq-len", default=50, show_default=True, type=click.IntRange(min=2),
              help="Length of the random sequence that is repeated.")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seed of the random tokens (0 to 2**32-1).")
@click.option("--top", default=10, show_default=True, type=click.IntRange(min=1), help="How many heads to show.")
@svg_option
@json_option
def heads(model, seq_len, seed, top, svg, as_json):
    """Find induction, previous-token and duplicate-token heads on random tokens repeated twice.

    Each score is a head's mean attention to one position; the same scores on random tokens that
    never repeat are shown beside them as a control.
    """
    from .engine.interp import scan_heads
    from .render import heads_view

    lm = load_model(model)
    scan = scan_heads(lm, seq_len, seed)
    scan = dataclasses.replace(scan, heads=scan.heads[:top])
    show(model, scan, partial(heads_view, scan), svg, as_json, "llmx heads")


@click.command(epilog="""\b
Examples:
  llmx neighbors " Paris"
  llmx neighbors --id 6342 --top 20
  llmx neighbors " king" --raw --json
""")
@click.argument("token", required=False)
@model_option
@click.option("--id", "token_id", type=click.IntRange(min=0), help="The token by id instead of by text.")
@click.option("--top", default=10, show_default=True, type=click.IntRange(min=1), help="How many tokens to show.")
@click.option("--raw", is_flag=True, help="Unembed the embedding directly, without the final norm.")
@svg_option
@json_option
def neighbors(token, model, token_id, top, raw, svg, as_json):
    """Tokens whose embeddings are nearest to TOKEN's, and the tokens its embedding points to.

    TOKEN must be a single token of the model (mind the leading space: " Paris" is not "Paris").
    """
    from .engine.interp import neighbors as run
    from .engine.interp import single_token
    from .render import neighbors_view

    if (token is None) == (token_id is None):
        raise click.UsageError("give either a TOKEN or --id N")
    lm = load_model(model)
    result = run(lm, single_token(lm, token) if token_id is None else token_id, top, through_norm=not raw)
    show(model, result, partial(neighbors_view, result), svg, as_json, "llmx neighbors")


@click.command(epilog="""\b
Examples:
  llmx steer "I hate you because" --add " Love" --sub " Hate" --layer 6 --coef 5
  llmx steer "Today I went to" --add " wedding" --sub " " --layer 6 --coef 4 --seed 2 --max-tokens 60
""")
@click.argument("text", required=False)
@model_option
@click.option("--add", required=True, help="Text whose activations are added.")
@click.option("--sub", required=True,
              help="Text whose activations are subtracted (padded with spaces to --add's length).")
@layer_option
@click.option("--coef", default=5.0, show_default=True, type=FiniteFloat(), help="How much of the difference to add.")
@click.option("--max-tokens", "max_tokens", default=40, show_default=True, type=click.IntRange(min=0),
              help="Most tokens to generate for each continuation.")
@click.option("--temperature", "-t", default=1.0, show_default=True, type=TEMPERATURE,
              help="Sampling temperature: 0 always picks the most likely token, else a number from 1e-06 up.")
@click.option("--seed", default=0, show_default=True, type=SEED,
              help="Random seed (0 to 2**32-1), the same for both continuations.")
@svg_option
@json_option
def steer(text, model, add, sub, layer, coef, max_tokens, temperature, seed, svg, as_json):
    """Continue TEXT with and without a steering vector (activation addition, ActAdd).

    The vector is the difference between the residual streams of --add and --sub entering block
    --layer, times --coef; it is added to TEXT's stream there, from the first position on. Every
    prompt starts with the model's start token, as in ActAdd. TEXT is read from stdin when it is
    '-' or absent.
    """
    from .engine import Sampling
    from .engine.interp import steer as run
    from .render import steer_view

    text = read_text(text)
    lm = load_model(model)
    result = run(lm, text, add, sub, layer, coef, max_tokens, Sampling(temperature=temperature), seed, on_notice=warn)
    show(model, result, partial(steer_view, result), svg, as_json, "llmx steer")


COMMANDS = [explain, lens, attention, heads, neighbors, steer]
