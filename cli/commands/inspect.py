"""Commands that look inside the model: explain, lens, attention, heads, neighbors, steer.

Each parses, calls `llmx.engine.interp`, and hands the result (its data) to a view in `views/`.
"""

from __future__ import annotations

import dataclasses

import click

from ..inputs import load_model, read_text
from ..notices import warn
from ..options import FiniteFloat, json_option, model_option, seed_option, svg_option, temperature_option
from .common import output
from .features import SAE, load_sae, sae_options

layer_option = click.option("--layer", "-l", required=True, type=click.IntRange(min=0),
                            help="Block to look at, counted from 0.")


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
    from ..engine.interp import explain as run
    from ..views.explain import explain_view

    text = read_text(text)
    lm = load_model(model)
    output(model, run(lm, lm.prompt_ids(text), top, on_notice=warn), explain_view, as_json, svg, "llmx explain")


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
    from ..engine.interp import logit_lens
    from ..views.lens import lens_position_view, lens_view

    text = read_text(text)
    lm = load_model(model)
    top = top or (5 if position is not None else 1)
    result = logit_lens(lm, lm.prompt_ids(text), top, None if position is None else [position], on_notice=warn)
    output(model, result, lens_view if position is None else lens_position_view, as_json, svg, "llmx lens")


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
    from ..engine.interp import attention as run
    from ..views.attention import attention_view

    text = read_text(text)
    lm = load_model(model)
    output(model, run(lm, lm.prompt_ids(text), layer, head, on_notice=warn), attention_view, as_json, svg,
           "llmx attention")


@click.command(epilog="""\b
Examples:
  llmx heads
  llmx heads --seq-len 30 --seed 1 --top 20 --json | jq '.heads[0]'
""")
@model_option
@click.option("--seq-len", default=50, show_default=True, type=click.IntRange(min=2),
              help="Length of the random sequence that is repeated.")
@seed_option("Seed of the random tokens (0 to 2**32-1).", default=0)
@click.option("--top", default=10, show_default=True, type=click.IntRange(min=1), help="How many heads to show.")
@svg_option
@json_option
def heads(model, seq_len, seed, top, svg, as_json):
    """Find induction, previous-token and duplicate-token heads on random tokens repeated twice.

    Each score is a head's mean attention to one position; the same scores on random tokens that
    never repeat are shown beside them as a control.
    """
    from ..engine.interp import scan_heads
    from ..views.attention import heads_view

    scan = scan_heads(load_model(model), seq_len, seed)
    output(model, dataclasses.replace(scan, heads=scan.heads[:top]), heads_view, as_json, svg, "llmx heads")


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
    from ..engine.interp import neighbors as run
    from ..engine.interp import single_token
    from ..views.neighbors import neighbors_view

    if (token is None) == (token_id is None):
        raise click.UsageError("give either a TOKEN or --id N")
    lm = load_model(model)
    result = run(lm, single_token(lm, token) if token_id is None else token_id, top, through_norm=not raw)
    output(model, result, neighbors_view, as_json, svg, "llmx neighbors")


@click.command(epilog=f"""\b
Examples:
  llmx steer "I hate you because" --add " Love" --sub " Hate" --layer 6 --coef 5
  llmx steer "Today I went to" --add " wedding" --sub " " --layer 6 --coef 4 --seed 2 --max-tokens 60
  llmx steer "My favourite place is" --sae {SAE} --feature 42 --coef 40
""")
@click.argument("text", required=False)
@model_option
@click.option("--add", help="Text whose activations are added.")
@click.option("--sub", help="Text whose activations are subtracted (padded with spaces to --add's length).")
@click.option("--layer", "-l", type=click.IntRange(min=0), help="Block to steer at, counted from 0.")
@sae_options(required=False)
@click.option("--feature", type=click.IntRange(min=0), metavar="ID",
              help="With --sae: add --coef times this latent's decoder direction at the SAE's hook.")
@click.option("--coef", default=5.0, show_default=True, type=FiniteFloat(), help="How much of the vector to add.")
@click.option("--max-tokens", "max_tokens", default=40, show_default=True, type=click.IntRange(min=0),
              help="Most tokens to generate for each continuation.")
@temperature_option
@seed_option("Random seed (0 to 2**32-1), the same for both continuations.", default=0)
@svg_option
@json_option
def steer(text, model, add, sub, layer, sae, center, feature, coef, max_tokens, temperature, seed, svg, as_json):
    """Continue TEXT with and without a steering vector (activation addition, ActAdd).

    The vector is the difference between the residual streams of --add and --sub entering block
    --layer, times --coef; it is added to TEXT's stream there, from the first position on. Every
    prompt starts with the model's start token, as in ActAdd. With --sae and --feature instead, the
    vector is --coef times the latent's decoder direction, added at the SAE's hook at every position,
    generated ones included. TEXT is read from stdin when it is '-' or absent.
    """
    from ..engine import Sampling

    check_steering_options(add, sub, layer, sae, feature)
    text = read_text(text)
    lm = load_model(model)
    sampling = Sampling(temperature=temperature)
    if sae is not None:
        from ..engine.sae import steer_feature
        from ..views.features import feature_steer_view

        result = steer_feature(lm, load_sae(lm, sae, center), text, feature, coef, max_tokens, sampling, seed,
                               on_notice=warn)
        return output(model, result, feature_steer_view, as_json, svg, "llmx steer")
    from ..engine.interp import steer as run
    from ..views.steer import steer_view

    result = run(lm, text, add, sub, layer, coef, max_tokens, sampling, seed, on_notice=warn)
    output(model, result, steer_view, as_json, svg, "llmx steer")


def check_steering_options(add, sub, layer, sae, feature) -> None:
    """Either --add, --sub and --layer, or --sae and --feature."""
    if sae is not None or feature is not None:
        if sae is None or feature is None:
            raise click.UsageError("steering with a feature needs both --sae and --feature")
        if add is not None or sub is not None or layer is not None:
            raise click.UsageError("give either --add/--sub/--layer or --sae/--feature, not both")
    elif add is None or sub is None or layer is None:
        raise click.UsageError("give --add, --sub and --layer (or --sae and --feature)")


COMMANDS = [explain, lens, attention, heads, neighbors, steer]
