"""The score command: how surprising each token of a text is to the model, and the totals."""

from __future__ import annotations

import click

from ..batch import batch_options, is_batch, run_batch
from ..data import record, scores_data
from ..inputs import load_model, read_text
from ..notices import warn
from ..options import json_option, model_option, svg_option
from .common import output


@click.command(epilog="""\b
Examples:
  llmx score "Hullo, my name is"
  llmx score --bos --json "The capital of France is Paris." | jq .perplexity
  cat essay.txt | llmx score --stride 512 --json | jq .bits_per_byte
  llmx score --jsonl --lines < sentences.txt > scores.jsonl
  llmx score "The capital of France is Paris." --svg surprisal.svg
""")
@click.argument("text", required=False)
@model_option
@click.option("--bos", is_flag=True,
              help="Condition on the start-of-text token (<|endoftext|> for GPT-2) so the first token is scored "
                   "too. Default: like Hugging Face's loss, score tokens 2..n given the ones before.")
@click.option("--stride", type=click.IntRange(min=1), metavar="N",
              help="For a text longer than the context: score it in sliding windows that each score N new "
                   "tokens (default: half the context).")
@svg_option
@json_option
@batch_options
def score(text, model, bos, stride, svg, as_json, jsonl, lines):
    """Show how surprising each token of TEXT is to the model: its log-probability (natural log)
    and surprisal in bits; then the mean negative log-likelihood (nats/token), the perplexity
    and the bits per byte (over the UTF-8 bytes of the scored tokens).

    TEXT is read from stdin when it is '-' or absent.
    """
    from ..views.score import score_view

    if is_batch(text, jsonl, lines, svg):
        lm = load_model(model)
        run_batch(jsonl, lines, lambda t, notice: record(model, score_text(lm, t, bos, stride, notice)))
        return
    text = read_text(text)
    lm = load_model(model)
    output(model, score_text(lm, text, bos, stride, warn), score_view, as_json, svg, "llmx score")


def score_text(lm, text: str, bos: bool, stride: int | None, notice):
    """The `data.Scores` of TEXT."""
    return scores_data(lm.score(lm.tokenizer.encode(text), bos=bos, stride=stride, on_notice=notice))
