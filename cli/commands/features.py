"""Commands that look at a sparse autoencoder's latents: features (per token) and feature (one latent's card).

`llmx steer --sae --feature` (in inspect.py) steers with a latent; the SAE options are shared from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import click

from ..data import HIDDEN
from ..inputs import load_model, read_file, read_text
from ..notices import note, warn
from ..options import json_option, model_option, svg_option
from .common import output

SAE = "jbloom/GPT2-Small-SAEs-Reformatted/blocks.8.hook_resid_pre"
SAE_HELP = ("The SAE: a folder in SAELens' format (cfg.json, sae_weights.safetensors), or owner/name/subfolder "
            "on the Hugging Face Hub, downloaded once.")
CENTER_HELP = ("Remove the stream's mean over d_model before encoding, as SAEs trained on TransformerLens' GPT-2 "
               "(centred writing weights) expect [default: from the SAE's config].")


def sae_options(required: bool):
    """--sae REF and --center/--no-center."""
    def decorate(command):
        command = click.option("--center/--no-center", default=None, help=CENTER_HELP)(command)
        return click.option("--sae", required=required, metavar="SAE", help=SAE_HELP)(command)
    return decorate


def load_sae(lm, ref: str, center: bool | None):
    from ..engine.sae import load_sae as load

    return load(ref, lm, center, on_notice=note)


@dataclass(frozen=True)
class FeaturesData:
    """What `llmx features --json` prints (after "model"): {"sae", "sink_left_out", "tokens"}."""

    sae: str
    sink_left_out: bool
    tokens: list
    hook: str = field(default="", metadata=HIDDEN)  # for the view's header


@click.command(epilog=f"""\b
Examples:
  llmx features "The capital of France is Paris" --sae {SAE}
  llmx features "Hullo, my name is" --sae {SAE} --top 3 --json | jq '.tokens[-1].features[0]'
""")
@click.argument("text", required=False)
@model_option
@sae_options(required=True)
@click.option("--top", default=5, show_default=True, type=click.IntRange(min=1), help="Latents to show per token.")
@click.option("--sink", is_flag=True, help="Show the latents at position 0 too: the attention sink, whose stream "
              "is ~100x the others' and whose activations mean nothing (left out by default, as in training).")
@svg_option
@json_option
def features(text, model, sae, center, top, sink, svg, as_json):
    """For each token of TEXT, the SAE latents that fire most on it, strongest first.

    The SAE reads the activations at its hook (e.g. blocks.8.hook_resid_pre, the stream entering block
    8); text starts with the model's start token when the SAE was trained so. Position 0 (the start
    token, or the first token) is the attention sink: its latents are left out unless --sink. TEXT is
    read from stdin when it is '-' or absent.
    """
    from ..engine.sae import features as run
    from ..views.features import features_view

    text = read_text(text)
    lm = load_model(model)
    loaded = load_sae(lm, sae, center)
    result = run(lm, loaded, text, top, sink=sink, on_notice=warn)
    data = FeaturesData(result.sae, result.sink_left_out, result.tokens, loaded.site)
    output(model, data, features_view, as_json, svg, "llmx features")


@click.command(epilog=f"""\b
Examples:
  llmx feature 42 --sae {SAE} --data essay.txt
  llmx feature 42 --sae {SAE} --data essay.txt --json | jq '.positive[0]'
""")
@click.argument("feature_id", metavar="ID", type=click.IntRange(min=0))
@model_option
@sae_options(required=True)
@click.option("--data", metavar="FILE", help="Scan the text of FILE ('-': stdin) for its contexts and density, "
                                             "instead of the SAE's index.")
@click.option("--contexts", "n_contexts", default=10, show_default=True, type=click.IntRange(min=0),
              help="Top-activating contexts to show.")
@click.option("--top", default=10, show_default=True, type=click.IntRange(min=1),
              help="Output tokens to show each way.")
@svg_option
@json_option
def feature(feature_id, model, sae, center, data, n_contexts, top, svg, as_json):
    """A latent's card: the contexts it fires on most, the tokens it pushes up and down, how often it fires.

    Contexts and density come from the SAE's llmx_index.safetensors (written by `llmx sae train`), or
    from scanning --data FILE. Output tokens are its decoder direction read through the final norm's
    scale and the unembedding, as SAE dashboards and Neuronpedia show them.
    """
    from ..engine.sae import feature_card
    from ..engine.sae.index import read_index
    from ..views.features import feature_view

    lm = load_model(model)
    loaded = load_sae(lm, sae, center)
    text = read_file(data) if data is not None else None
    index = read_index(loaded.path) if text is None else None
    card = feature_card(lm, loaded, feature_id, index=index, text=text, top=top, n_contexts=n_contexts)
    output(model, card, feature_view, as_json, svg, "llmx feature")


COMMANDS = [features, feature]
