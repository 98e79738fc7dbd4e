"""Why this token? attribute (direct logit attribution) and patch (activation patching); --ablate, the option
predict, continue and score take, is defined here too.

Each parses, calls `llmx.engine.interp`, and hands the result (its data) to a view in `views/why.py`.
"""

from __future__ import annotations

import click

from ..inputs import load_model, read_text
from ..notices import progress, warn
from ..options import json_option, model_option, svg_option
from .common import output

TOKEN_HELP = "text that is exactly one token (mind the leading space: \" Mary\"), or #ID"


@click.command(epilog="""\b
Examples:
  llmx attribute "When Mary and John went to the store, John gave a drink to" --target " Mary" --foil " John"
  llmx attribute "The capital of France is" --target " Paris" --json | jq '.components[0]'
  llmx attribute "Hullo, my name is" --target "#318" --position 5 --svg attribution.svg
""")
@click.argument("text", required=False)
@model_option
@click.option("--target", required=True, metavar="TOKEN", help=f"The token whose logit is explained: {TOKEN_HELP}.")
@click.option("--foil", metavar="TOKEN", help="Explain logit(target) - logit(foil) instead: the answer against "
                                               "this alternative.")
@click.option("--position", "-p", default=-1, show_default=True, type=int,
              help="The position whose next-token logit is explained (-1: the last).")
@click.option("--top", default=12, show_default=True, type=click.IntRange(min=1),
              help="How many components the table shows.")
@svg_option
@json_option
def attribute(text, model, target, foil, position, top, svg, as_json):
    """Direct logit attribution: how much each head, MLP and embedding of the model wrote the logit of
    --target (or the difference to --foil) after TEXT.

    The stream entering the final norm is a sum of what every component wrote; with the final norm's
    scale frozen at its actual value, the norm is linear, so each component's share of the logit is
    exact and the shares (plus the norm's shift, for LayerNorm) add up to the real logit. In models
    with sandwich norms (Gemma 3) each head's output passes its block's post-norm, whose scale is frozen
    the same way. Shown: the
    largest components, every head by layer, and the logit read after each block. TEXT is read from
    stdin when it is '-' or absent.
    """
    from functools import partial

    from ..engine.interp import attribute as run
    from ..engine.interp import parse_token
    from ..views.why import attribute_view

    text = read_text(text)
    lm = load_model(model)
    result = run(lm, lm.prompt_ids(text), parse_token(lm, target), foil and parse_token(lm, foil), position,
                 on_notice=warn)
    output(model, result, partial(attribute_view, top=top), as_json, svg, "llmx attribute")


@click.command(epilog="""\b
Examples:
  llmx patch "When Mary and John went to the store, John gave a drink to" "When Mary and John went to the store, Mary gave a drink to" --target " Mary" --foil " John"
  llmx patch "The Eiffel Tower is in" "The Colosseum is in" --target " Paris" --foil " Rome" --json | jq .clean_ld
""")
@click.argument("clean")
@click.argument("corrupt")
@model_option
@click.option("--target", required=True, metavar="TOKEN", help=f"The clean prompt's answer: {TOKEN_HELP}.")
@click.option("--foil", required=True, metavar="TOKEN", help=f"The corrupted prompt's answer: {TOKEN_HELP}.")
@svg_option
@json_option
def patch(clean, corrupt, model, target, foil, svg, as_json):
    """Activation patching: run CORRUPT with one activation taken from the run of CLEAN, and show how much
    of the clean answer comes back.

    Each cell is (LD_patched - LD_corrupt) / (LD_clean - LD_corrupt), where LD is logit(target) -
    logit(foil) at the last position: 0 means no effect, 1 fully restored. Sites: the stream entering
    each block (resid_pre), each block's attention and MLP output, at each position; and each head's
    output at every position. The prompts must have the same number of tokens.
    """
    from ..engine.interp import parse_token
    from ..engine.interp import patch as run
    from ..views.why import patch_view

    lm = load_model(model)
    with progress("patching") as on_progress:
        result = run(lm, lm.prompt_ids(clean), lm.prompt_ids(corrupt), parse_token(lm, target), parse_token(lm, foil),
                     on_progress=on_progress)
    output(model, result, patch_view, as_json, svg, "llmx patch")


def parse_ablate(ctx, param, values: tuple[str, ...]):
    """--ablate L.H[,L.H...] / L.mlp (repeatable) as engine units; a malformed one is a usage error."""
    from ..engine.errors import InputError
    from ..engine.interp import parse_ablation

    try:
        return tuple(unit for value in values for unit in parse_ablation(value))
    except InputError as e:
        raise click.BadParameter(str(e), ctx, param) from None


def ablation_options(command):
    """--ablate and --ablate-mode, for predict, continue and score."""
    command = click.option("--ablate-mode", type=click.Choice(["zero", "mean"]), default="zero", show_default=True,
                           help="Replace each ablated output with zeros, or with its mean over the prompt.")(command)
    return click.option("--ablate", multiple=True, callback=parse_ablate, metavar="L.H[,L.H...]|L.mlp",
                        help="Knock out attention heads (block.head, e.g. 9.6) or a block's MLP (9.mlp); "
                             "comma-separated, repeatable.")(command)


def ablated(lm, units, mode: str, ids):
    """The model with `units` ablated (mean over `ids`), or `lm` itself when there are none."""
    from ..engine.interp import ablated as run

    return run(lm, units, mode, ids)


COMMANDS = [attribute, patch]
