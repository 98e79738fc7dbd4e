"""The core commands: tokenize, predict, continue and models. Each parses, calls the engine, renders."""

from __future__ import annotations

import json
import re
import sys

import click

from .inputs import json_option, load_model, model_option, read_text, warn
from .engine.errors import InputError


def emit_json(obj) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False))


@click.command(epilog="""\b
Examples:
  llmx tokenize "Hullo, my name is"
  llmx tokenize --ids "Hullo, my name is"        # 39 724 78 11 616 1438 318
  llmx tokenize --decode "39 724 78 11 616 1438 318"
  cat notes.txt | llmx tokenize --count
""")
@click.argument("text", required=False)
@model_option
@click.option("--ids", "only_ids", is_flag=True, help="Print only the token ids, on one line.")
@click.option("--count", "only_count", is_flag=True, help="Print only the number of tokens.")
@click.option("--decode", is_flag=True, help="Read token ids (space or comma separated) and print their text.")
@click.option("--truncate", type=click.IntRange(min=0), metavar="N", help="Print the text of the first N tokens.")
@click.option("--special", is_flag=True, help="Parse special-token text such as <|endoftext|> as special tokens.")
@json_option
def tokenize(text, model, only_ids, only_count, decode, truncate, special, as_json):
    """Show how TEXT splits into tokens: a token view, a table of ids and pieces, the count.

    TEXT is read from stdin when it is '-' or absent.
    """
    text = read_text(text)
    lm = load_model(model)
    tokenizer = lm.tokenizer
    if decode:
        ids = parse_ids(text)
        out = tokenizer.decode(ids)
        emit_json({"model": model, "ids": ids, "text": out}) if as_json else click.echo(out)
        return
    ids = tokenizer.encode(text, special=special)
    if truncate is not None:
        out = tokenizer.decode(ids[:truncate])
        emit_json({"model": model, "text": out, "count": min(truncate, len(ids))}) if as_json else click.echo(out)
    elif as_json:
        emit_json({"model": model, "tokens": [{"id": i, "text": lm.token_text(i)} for i in ids], "count": len(ids)})
    elif only_ids:
        click.echo(" ".join(map(str, ids)))
    elif only_count:
        click.echo(len(ids))
    else:
        from .render import print_tokens

        print_tokens(ids, [tokenizer.piece(i) for i in ids])


def parse_ids(text: str) -> list[int]:
    fields = [f for f in re.split(r"[\s,\[\]]+", text) if f]
    if not all(re.fullmatch(r"-?\d+", f) for f in fields):
        bad = next(f for f in fields if not re.fullmatch(r"-?\d+", f))
        raise InputError(f"--decode reads token ids (integers separated by spaces or commas), not {bad!r}")
    return [int(f) for f in fields]


@click.command(epilog="""\b
Examples:
  llmx predict "Hullo, my name is"
  llmx predict "The capital of France is" --top 5 --json | jq '.predictions[0]'
""")
@click.argument("text", required=False)
@model_option
@click.option("--top", default=10, show_default=True, type=click.IntRange(min=1), help="How many tokens to show.")
@json_option
def predict(text, model, top, as_json):
    """Show the most likely next tokens after TEXT, with probabilities and logits.

    TEXT is read from stdin when it is '-' or absent; an empty TEXT predicts the first token.
    """
    text = read_text(text)
    lm = load_model(model)
    ids = lm.prompt_ids(text)
    if len(ids) > lm.config.n_ctx:
        warn(f"the text has {len(ids)} tokens, more than the model's context of {lm.config.n_ctx}: "
             f"predicting from the last {lm.config.n_ctx}")
        ids = ids[-lm.config.n_ctx:]
    predictions = lm.predict(ids, top)
    if as_json:
        emit_json({"model": model, "prompt_tokens": len(ids),
                   "predictions": [{"rank": p.rank, "id": p.id, "token": p.token, "prob": p.prob, "logit": p.logit}
                                   for p in predictions]})
    else:
        from .render import print_predictions

        print_predictions(predictions, len(ids))


@click.command("continue", epilog="""\b
Examples:
  llmx continue "How high is Mt. Everest?" --max-tokens 40
  echo "Hullo, my name is" | llmx continue --seed 1 | wc -w
  llmx continue "Q: What is 2+2?\\nA:" --temperature 0 --stop "\\n"
""")
@click.argument("text", required=False)
@model_option
@click.option("--max-tokens", "max_tokens", default=50, show_default=True, type=click.IntRange(min=0),
              help="Most tokens to generate.")
@click.option("--temperature", "-t", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Sampling temperature; 0 always picks the most likely token.")
@click.option("--top-k", type=click.IntRange(min=1), help="Sample only from the k most likely tokens.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True),
              help="Sample only from the most likely tokens whose probabilities add up to p.")
@click.option("--seed", type=int, help="Random seed: the same seed gives the same continuation.")
@click.option("--stop", multiple=True, help="Stop when this text appears (repeatable; \\n and \\t are understood).")
@click.option("--echo", is_flag=True, help="Print the prompt before the continuation.")
@json_option
def continue_(text, model, max_tokens, temperature, top_k, top_p, seed, stop, echo, as_json):
    """Continue TEXT, streaming tokens to stdout as they are sampled.

    TEXT is read from stdin when it is '-' or absent; an empty TEXT starts from <|endoftext|>.
    """
    from .engine import Sampling

    text = read_text(text)
    sampling = Sampling(temperature=temperature, top_k=top_k, top_p=top_p)
    stop = tuple(s.encode().decode("unicode_escape") if "\\" in s else s for s in stop)
    lm = load_model(model)
    generation = lm.generate(lm.prompt_ids(text), max_tokens, sampling=sampling, seed=seed, stop=stop,
                             on_notice=warn)
    if as_json:
        for _ in generation:
            pass
        emit_json({"model": model, "text": generation.text, "ids": generation.ids,
                   "finish_reason": generation.finish_reason})
        return
    out = sys.stdout
    if echo:
        out.write(text)
    for step in generation:
        out.write(step.text)
        out.flush()
    if not ((text if echo else "") + generation.text).endswith("\n"):
        out.write("\n")
    out.flush()


@click.group(invoke_without_command=True, epilog="""\b
Examples:
  llmx models                      # cached models and the short names
  llmx models --json | jq -r '.cached[].id'
  llmx models show gpt2            # architecture, size, quantization, context
  llmx models show ./SmolLM2-135M-Instruct.Q4_1.gguf
""")
@json_option
@click.pass_context
def models(ctx, as_json):
    """List the models in the Hugging Face cache (with their size on disk) and the short names llmx knows."""
    if ctx.invoked_subcommand is not None:
        return
    from .engine.hub import SHORT_NAMES, cached_models

    cached = cached_models()
    if as_json:
        emit_json({"cached": [{"id": m.repo_id, "size_on_disk": m.size_on_disk, "path": str(m.snapshot)}
                              for m in cached],
                   "short_names": SHORT_NAMES})
    else:
        from .render import print_models

        print_models(cached, SHORT_NAMES)


@models.command("show", epilog="""\b
Examples:
  llmx models show gpt2
  llmx models show ./SmolLM2-135M-Instruct.Q4_1.gguf --json
""")
@click.argument("model")
@json_option
def models_show(model, as_json):
    """Describe MODEL (a Hub id, directory or .gguf file): architecture, parameters, quantization, context."""
    from .engine.describe import describe
    from .engine.hub import locate

    info = {"model": model, **describe(locate(model))}
    if as_json:
        emit_json(info)
    else:
        from .render import print_description

        print_description(info)


COMMANDS = [tokenize, predict, continue_, models]
