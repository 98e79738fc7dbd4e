"""`llmx sae train`: train a TopK sparse autoencoder on a model's residual stream, in NumPy."""

from __future__ import annotations

from pathlib import Path

import click

from ..inputs import load_model
from ..notices import progress, saved
from ..options import SEED, json_option, model_option, several_values

EXAMPLES = """\b
Examples:
  llmx sae train -m gpt2 --layer 6 --data essay.txt notes.txt --out sae --window 8 --latents 64 --k 4 --epochs 2
  llmx sae train -m gpt2 --layer 6 --data essay.txt --valid notes.txt --out sae --window 8 --latents 64 --k 4 --json
"""


@click.group(epilog=EXAMPLES)
def sae():
    """Sparse autoencoders (SAEs) on a model's residual stream: train one with `llmx sae train`."""


@sae.command(cls=several_values(click.Command, "--data", "--valid"), epilog=EXAMPLES)
@model_option
@click.option("--layer", required=True, type=int, help="The SAE reads the residual stream after this block "
              "(blocks.L.hook_resid_post).")
@click.option("--data", multiple=True, required=True, metavar="FILE",
              help="Training text: files, or folders of .txt files; several after one --data.")
@click.option("--out", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="The SAE's folder (SAELens format, plus llmx_index.safetensors); collected activations go "
              "to DIR/activations (a killed run continues from them; delete them when done).")
@click.option("--valid", multiple=True, metavar="FILE", help="Held-out text for the metrics [default: "
              "--valid-fraction of the --data files, or the end of a single file].")
@click.option("--valid-fraction", default=0.1, show_default=True, type=click.FloatRange(0, 1, min_open=True,
              max_open=True), help="Without --valid: the fraction of the files (or of a single file) held out.")
@click.option("--valid-tokens", default=8192, show_default=True, type=click.IntRange(min=1),
              help="Held-out tokens measured (each costs about two forward passes).")
@click.option("--expansion", type=click.IntRange(min=1), help="Latents per residual dimension [default: 16].")
@click.option("--latents", type=click.IntRange(min=2), help="The number of latents (instead of --expansion).")
@click.option("--k", default=32, show_default=True, type=click.IntRange(min=1), help="Active latents per token.")
@click.option("--tokens", type=click.IntRange(min=1), metavar="N", help="Train on at most N tokens (a random "
              "sample of the windows) [default: all].")
@click.option("--epochs", default=4.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Passes over the training tokens.")
@click.option("--lr", default=3e-3, show_default=True, type=click.FloatRange(0, min_open=True))
@click.option("--batch", default=512, show_default=True, type=click.IntRange(min=1), help="Tokens per step.")
@click.option("--window", type=click.IntRange(min=3), help="Tokens per sequence; the first position of each is "
              "left out (the attention sink) [default: 256, or the model's context].")
@click.option("--seed", default=0, show_default=True, type=SEED)
@json_option
def train(model, layer, data, out, valid, valid_fraction, valid_tokens, expansion, latents, k, tokens, epochs,
          lr, batch, window, seed, as_json):
    """Train a TopK SAE on MODEL's residual stream after block --layer, over your text.

    It collects the residuals once (float16, in DIR/activations), trains with Adam and an auxiliary loss
    that revives dead latents, writes a SAELens folder, and reports on held-out text: the fraction of
    variance explained, mean L0, dead latents, and the cross-entropy loss recovered when the
    reconstruction replaces the residual.
    """
    if expansion and latents:
        raise click.UsageError("give --expansion or --latents, not both")
    from ..engine.sae.train.run import TrainOptions, train_sae

    lm = load_model(model)
    options = TrainOptions(layer=layer, k=k, latents=latents, expansion=expansion or 16, tokens=tokens, lr=lr,
                           batch=batch, epochs=epochs, seed=seed, window=window, valid_fraction=valid_fraction,
                           valid_tokens=valid_tokens)
    metrics = train_sae(lm, list(data), list(valid) or None, Path(out), options, stage=progress)
    saved(out)
    if as_json:
        from ..data import to_json

        click.echo(to_json(metrics.as_dict())[0])
    else:
        click.echo(report(metrics.as_dict()))


def report(m: dict) -> str:
    """The metrics as a few readable lines."""
    return "\n".join([
        f"latents {m['latents']}, k {m['k']}, trained on {m['tokens']:,} tokens",
        f"variance explained  {m['fve']:.3f}",
        f"mean L0             {m['l0']:.1f}",
        f"dead latents        {m['dead']:.1%}",
        f"CE loss recovered   {m['ce_recovered']:.3f}  (clean {m['ce_clean']:.3f}, with the SAE "
        f"{m['ce_sae']:.3f}, zero-ablated {m['ce_zero']:.3f} nats)"])


COMMANDS = [sae]
