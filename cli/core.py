"""The core commands: tokenize, predict, continue and models. Each parses, calls the engine, renders."""

from __future__ import annotations

import json
import re
import sys

import click

from .batch import batch_options, is_batch, run_batch
from .inputs import json_option, load_model, model_option, read_file, read_text, warn
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
    from .engine import load_tokenizer

    text = read_text(text)
    tokenizer = load_tokenizer(model)  # the weights are not needed
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
        emit_json({"model": model, "tokens": [{"id": i, "text": tokenizer.text(i)} for i in ids], "count": len(ids)})
    elif only_ids:
        click.echo(" ".join(map(str, ids)))
    elif only_count:
        click.echo(len(ids))
    else:
        from .render import print_tokens

        print_tokens(ids, [tokenizer.piece(i) for i in ids])


ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def unescape(text: str) -> str:
    """\\n, \\t, \\r and \\\\ as typed in a shell argument; every other character (é too) as it is."""
    return re.sub(r"\\(.)", lambda m: ESCAPES.get(m[1], m[0]), text)


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
  llmx predict --jsonl --lines --top 1 < prompts.txt
""")
@click.argument("text", required=False)
@model_option
@click.option("--top", default=10, show_default=True, type=click.IntRange(min=1), help="How many tokens to show.")
@json_option
@batch_options
def predict(text, model, top, as_json, jsonl, lines):
    """Show the most likely next tokens after TEXT, with probabilities and logits.

    TEXT is read from stdin when it is '-' or absent; an empty TEXT predicts the first token.
    """
    if is_batch(text, jsonl, lines):
        lm = load_model(model)
        run_batch(jsonl, lines, lambda t, notice: predictions_json(model, *predict_text(lm, t, top, notice)))
        return
    text = read_text(text)
    lm = load_model(model)
    ids, predictions = predict_text(lm, text, top, warn)
    if as_json:
        emit_json(predictions_json(model, ids, predictions))
    else:
        from .render import print_predictions

        print_predictions(predictions, len(ids))


def predict_text(lm, text: str, top: int, notice):
    ids = lm.prompt_ids(text)
    if len(ids) > lm.config.n_ctx:
        notice(f"the text has {len(ids)} tokens, more than the model's context of {lm.config.n_ctx}: "
               f"predicting from the last {lm.config.n_ctx}")
        ids = ids[-lm.config.n_ctx:]
    return ids, lm.predict(ids, top)


def predictions_json(model: str, ids: list[int], predictions) -> dict:
    return {"model": model, "prompt_tokens": len(ids),
            "predictions": [{"rank": p.rank, "id": p.id, "token": p.token, "prob": p.prob, "logit": p.logit}
                            for p in predictions]}


@click.command("continue", epilog="""\b
Examples:
  llmx continue "How high is Mt. Everest?" --max-tokens 40
  echo "Hullo, my name is" | llmx continue --seed 1 | wc -w
  llmx continue "Q: What is 2+2?\\nA:" --temperature 0 --stop "\\n"
  grep -i everest notes.txt | llmx continue --context - "Q: How high is Mt. Everest?" --max-tokens 20
  llmx continue --jsonl questions.jsonl --seed 1 --max-tokens 20 > answers.jsonl
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
@click.option("--context", metavar="FILE",
              help="Put the text of FILE ('-': stdin) before TEXT: the prompt is the context, a blank line, then "
                   "TEXT. If they do not fit the window with --max-tokens, the context's start is dropped.")
@json_option
@batch_options
def continue_(text, model, max_tokens, temperature, top_k, top_p, seed, stop, echo, context, as_json, jsonl, lines):
    """Continue TEXT, streaming tokens to stdout as they are sampled.

    TEXT is read from stdin when it is '-' or absent; an empty TEXT starts from <|endoftext|>.
    With --context, TEXT is a question about the context (retrieval-augmented prompts).
    """
    from .engine import Sampling

    batch = is_batch(text, jsonl, lines)
    if context == "-" and (jsonl == "-" if batch else text in (None, "-")):
        raise click.UsageError("--context - reads the context from stdin, so give the question as TEXT "
                               "(or the --jsonl input as a file)")
    context = read_file(context) if context is not None else None
    text = None if batch else read_text(text)
    options = dict(sampling=Sampling(temperature=temperature, top_k=top_k, top_p=top_p), seed=seed,
                   stop=tuple(map(unescape, stop)))
    lm = load_model(model)
    if batch:
        run_batch(jsonl, lines, lambda t, notice: generation_json(
            model, finish(start_generation(lm, t, context, max_tokens, notice, **options))))
        return
    generation = start_generation(lm, text, context, max_tokens, warn, **options)
    if as_json:
        emit_json(generation_json(model, finish(generation)))
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


def start_generation(lm, text: str, context: str | None, max_tokens: int, notice, **options):
    """A `Generation` continuing TEXT, after the context if there is one (cut from its start to fit)."""
    if context is None:
        ids = lm.prompt_ids(text)
    else:
        from .engine import with_context

        prompt = with_context(lm.tokenizer, context, text, lm.config.n_ctx - max_tokens)
        if prompt.dropped:
            whole = " (all of it)" if prompt.dropped == prompt.context_tokens else ""
            notice(f"the context ({prompt.context_tokens} tokens) and the question do not fit the model's "
                   f"context of {lm.config.n_ctx} tokens with --max-tokens {max_tokens}: dropped the first "
                   f"{prompt.dropped} tokens of the context{whole}")
        ids = prompt.ids
    return lm.generate(ids, max_tokens, on_notice=notice, **options)


def finish(generation):
    for _ in generation:
        pass
    return generation


def generation_json(model: str, generation) -> dict:
    return {"model": model, "text": generation.text, "ids": generation.ids, "finish_reason": generation.finish_reason}



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
