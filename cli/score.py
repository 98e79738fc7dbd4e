"""The score command: how surprising each token of a text is to the model, and the totals."""

from __future__ import annotations

import click

from .batch import batch_options, is_batch, run_batch
from .core import emit_json
from .inputs import json_option, load_model, model_option, read_text, warn


@click.command(epilog="""\b
Examples:
  llmx score "Hullo, my name is"
  llmx score --bos --json "The capital of France is Paris." | jq .perplexity
  cat essay.txt | llmx score --stride 512 --json | jq .bits_per_byte
  llmx score --jsonl --lines < sentences.txt > scores.jsonl
""")
@click.argument("text", required=False)
@model_option
@click.option("--bos", is_flag=True,
              help="Condition on the start-of-text token (<|endoftext|> for GPT-2) so the first token is scored "
                   "too. Default: like Hugging Face's loss, score tokens 2..n given the ones before.")
@click.option("--stride", type=click.IntRange(min=1), metavar="N",
              help="For a text longer than the context: score it in sliding windows that each score N new "
                   "tokens (default: half the context).")
@json_option
@batch_options
def score(text, model, bos, stride, as_json, jsonl, lines):
    """Show how surprising each token of TEXT is to the model: its log-probability (natural log)
    and surprisal in bits; then the mean negative log-likelihood (nats/token), the perplexity
    and the bits per byte (over the UTF-8 bytes of the scored tokens).

    TEXT is read from stdin when it is '-' or absent.
    """
    if is_batch(text, jsonl, lines):
        lm = load_model(model)
        run_batch(jsonl, lines, lambda t, notice: score_json(score_text(lm, t, bos, stride, notice), model))
        return
    text = read_text(text)
    lm = load_model(model)
    result = score_text(lm, text, bos, stride, warn)
    if as_json:
        emit_json(score_json(result, model))
    else:
        from .render import print_score

        print_score(result)


def score_text(lm, text: str, bos: bool, stride: int | None, notice):
    return lm.score(lm.tokenizer.encode(text), bos=bos, stride=stride, on_notice=notice)


def score_json(result, model: str) -> dict:
    return {"model": model,
            "tokens": [{"id": t.id, "text": t.text, "logprob": t.logprob, "bits": t.bits} for t in result.tokens],
            "scored_tokens": len(result.scored), "bytes": result.n_bytes, "mean_nll": result.mean_nll,
            "perplexity": result.perplexity, "bits_per_byte": result.bits_per_byte, "windows": result.windows}
