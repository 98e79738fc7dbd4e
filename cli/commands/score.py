"""The score command: how surprising each token of a text is to the model, and the totals."""

from __future__ import annotations

import click

from ..batch import batch_options, is_batch, run_batch
from ..data import record, scores_data
from ..inputs import load_model, read_text
from ..notices import prefill_progress, warn
from ..options import json_option, model_option, svg_option
from .common import output
from .why import ablated, ablation_options


@click.command(epilog="""\b
Examples:
  llmx score "Hullo, my name is"
  llmx score --bos --json "The capital of France is Paris." | jq .perplexity
  cat essay.txt | llmx score --stride 512 --json | jq .bits_per_byte
  llmx score --jsonl --lines < sentences.txt > scores.jsonl
  llmx score "The capital of France is Paris." --svg surprisal.svg
  llmx score "The capital of France is Paris." --ablate 0.1,1.mlp --json | jq .perplexity
""")
@click.argument("text", required=False)
@model_option
@click.option("--bos", is_flag=True,
              help="Condition on the start-of-text token (<|endoftext|> for GPT-2) so the first token is scored "
                   "too. Default: like Hugging Face's loss, score tokens 2..n given the ones before.")
@click.option("--stride", type=click.IntRange(min=1), metavar="N",
              help="For a text longer than the context: score it in sliding windows that each score N new "
                   "tokens (default: half the context).")
@ablation_options
@svg_option
@json_option
@batch_options
def score(text, model, bos, stride, ablate, ablate_mode, svg, as_json, jsonl, lines, batch_size):
    """Show how surprising each token of TEXT is to the model: its log-probability (natural log)
    and surprisal in bits; then the mean negative log-likelihood (nats/token), the perplexity
    and the bits per byte (over the UTF-8 bytes of the scored tokens).

    TEXT is read from stdin when it is '-' or absent.
    """
    from ..views.score import score_view

    if is_batch(text, jsonl, lines, svg, batch_size):
        lm = load_model(model)
        run_batch(jsonl, lines, lambda t, notice: record(model, score_text(lm, t, bos, stride, notice, ablate,
                                                                                  ablate_mode)), batch_size)
        return
    text = read_text(text)
    lm = load_model(model)
    with prefill_progress() as on_progress:
        data = score_text(lm, text, bos, stride, warn, ablate, ablate_mode, on_progress)
    output(model, data, score_view, as_json, svg, "llmx score")


def score_text(lm, text: str, bos: bool, stride: int | None, notice, ablate=(), ablate_mode: str = "zero",
               on_progress=None):
    """The `data.Scores` of TEXT, with the `ablate` units knocked out (mean: over the text's last n_ctx tokens)."""
    ids = lm.tokenizer.encode(text)
    lm = ablated(lm, ablate, ablate_mode, ids)
    return scores_data(lm.score(ids, bos=bos, stride=stride, on_notice=notice, on_progress=on_progress))
