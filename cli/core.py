"""The core commands: tokenize, predict, continue and models. Each parses, calls the engine, renders."""

from __future__ import annotations

import re
import sys

import click

from .batch import batch_options, is_batch, run_batch, to_json
from .inputs import (SEED, TEMPERATURE, FiniteFloat, json_option, load_model, model_option, read_file, read_text,
                     resolve_model, warn)
from .engine.errors import InputError, count


def emit_json(obj) -> None:
    """`obj` as one line of JSON: non-finite numbers become null, with a warning naming them (see batch.to_json)."""
    line, nonfinite = to_json(obj)
    for path in nonfinite:
        warn(f"{path} is not a finite number, which JSON cannot hold: written as null")
    click.echo(line)


@click.command(epilog="""\b
Examples:
  llmx tokenize "Hullo, my name is"
  llmx tokenize --ids "Hullo, my name is"        # 39 724 78 11 616 1438 318
  llmx tokenize --decode 39 724 78 11 616 1438 318
  llmx tokenize --decode --truncate 3 "39 724 78 11 616 1438 318"   # Hullo
  cat notes.txt | llmx tokenize --count
""")
@click.argument("text", nargs=-1, metavar="[TEXT | IDS...]")
@model_option
@click.option("--ids", "only_ids", is_flag=True, help="Print only the token ids, on one line.")
@click.option("--count", "only_count", is_flag=True, help="Print only the number of tokens.")
@click.option("--decode", is_flag=True,
              help="Read token ids (space or comma separated, in one argument or several) and print their text.")
@click.option("--truncate", type=click.IntRange(min=0), metavar="N",
              help="Print the text of the first N tokens (of TEXT, or of the ids with --decode).")
@click.option("--special", is_flag=True, help="Parse special-token text such as <|endoftext|> as special tokens.")
@json_option
def tokenize(text, model, only_ids, only_count, decode, truncate, special, as_json):
    """Show how TEXT splits into tokens: a token view, a table of ids and pieces, the count.

    TEXT is read from stdin when it is '-' or absent. --ids and --count print only that and go with
    no other output option; --decode and --truncate print text, also as --json.
    """
    from .engine import load_tokenizer

    check_tokenize_options(len(text), only_ids, only_count, as_json, decode, truncate, special)
    text = read_text(" ".join(text) if text else None)
    tokenizer = load_tokenizer(model)  # the weights are not needed
    if decode:
        ids = parse_ids(text)[:truncate]
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


def check_tokenize_options(n_args: int, only_ids: bool, only_count: bool, as_json: bool, decode: bool,
                           truncate: int | None, special: bool) -> None:
    """Usage errors for tokenize options that would otherwise be silently ignored."""
    if n_args > 1 and not decode:
        raise click.UsageError("TEXT is one argument: quote it (llmx tokenize \"Hullo, my name is\"); "
                               "only --decode reads several arguments (token ids)")
    given = [name for name, on in (("--ids", only_ids), ("--count", only_count), ("--json", as_json),
                                   ("--decode", decode), ("--truncate", truncate is not None)) if on]
    if (only_ids or only_count) and len(given) > 1:
        raise click.UsageError(f"{' and '.join(given)} do not go together: --ids and --count each print only "
                               "that (--json prints the ids and the count together)")
    if decode and special:
        raise click.UsageError("--special is about reading TEXT; --decode reads ids: drop --special")


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
    ids = lm.fit(lm.prompt_ids(text), notice, doing="predicting from")  # the engine's context policy
    return ids, lm.predict(ids, top)


def predictions_json(model: str, ids: list[int], predictions) -> dict:
    return {"model": model, "prompt_tokens": len(ids),
            "predictions": [{"rank": p.rank, "id": p.id, "token": p.token, "prob": p.prob, "logit": p.logit}
                            for p in predictions]}


@click.command("continue", epilog="""\b
Examples:
  llmx continue "How high is Mt. Everest?" --max-tokens 40
  echo "Hullo, my name is" | llmx continue --seed 1 | wc -w
  llmx continue $'Q: What is 2+2?\\nA:' --temperature 0 --stop '\\n'   # $'..': a real newline
  grep -i everest notes.txt | llmx continue --context - "Q: How high is Mt. Everest?" --max-tokens 20
  llmx continue --jsonl questions.jsonl --seed 1 --max-tokens 20 > answers.jsonl
""")
@click.argument("text", required=False)
@model_option
@click.option("--max-tokens", "max_tokens", default=50, show_default=True, type=click.IntRange(min=0),
              help="Most tokens to generate.")
@click.option("--temperature", "-t", default=1.0, show_default=True, type=TEMPERATURE,
              help="Sampling temperature: 0 always picks the most likely token, else a number from 1e-06 up.")
@click.option("--top-k", type=click.IntRange(min=1), help="Sample only from the k most likely tokens.")
@click.option("--top-p", type=FiniteFloat(0, 1, min_open=True),
              help="Sample only from the most likely tokens whose probabilities add up to p.")
@click.option("--seed", type=SEED, help="Random seed (0 to 2**32-1): the same seed gives the same continuation.")
@click.option("--stop", multiple=True, help="Stop when this text appears (repeatable; \\n and \\t are understood).")
@click.option("--echo", is_flag=True,
              help='Print the prompt (with --context: the context, a blank line and TEXT) before the continuation; '
                   'with --json or --jsonl, put it in a "prompt" field.')
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
            model, start_generation(lm, t, context, max_tokens, notice, **options).result(),
            prompt_text(t, context) if echo else None))
        return
    generation = start_generation(lm, text, context, max_tokens, warn, **options)
    prompt = prompt_text(text, context) if echo else ""
    if as_json:
        emit_json(generation_json(model, generation.result(), prompt if echo else None))
        return
    out = sys.stdout
    out.write(prompt)
    for step in generation:
        out.write(step.text)
        out.flush()
    if not (prompt + generation.result().text).endswith("\n"):
        out.write("\n")
    out.flush()


def prompt_text(text: str, context: str | None) -> str:
    """The prompt as built from TEXT and the context (see engine.prompting), before any cut to fit the window."""
    from .engine.prompting import SEPARATOR

    if context is None or not context.rstrip():
        return text
    return context.rstrip() + SEPARATOR + text


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
                   f"{count(prompt.dropped, 'token')} of the context{whole}")
        ids = prompt.ids
    return lm.generate(ids, max_tokens, on_notice=notice, **options)


def generation_json(model: str, result, prompt: str | None = None) -> dict:
    """The `GenerationResult` of a continuation; with --echo its prompt too."""
    echoed = {} if prompt is None else {"prompt": prompt}
    return {"model": model, **echoed, "text": result.text, "ids": result.ids, "finish_reason": result.finish_reason}



@click.group(invoke_without_command=True, epilog="""\b
Examples:
  llmx models                      # cached models and the short names
  llmx models --json | jq -r '.cached[].id'
  llmx models show gpt2            # architecture, size, quantization, context
  llmx -m gpt2 models show         # the model of -m or LLMX_MODEL
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
@click.argument("model", required=False)
@json_option
@click.pass_context
def models_show(ctx, model, as_json):
    """Describe MODEL (a Hub id, directory or .gguf file): architecture, parameters, quantization, context.

    Without MODEL: the model of `llmx -m MODEL models show`, else LLMX_MODEL, else the default.
    """
    from .engine.describe import describe
    from .engine.hub import locate

    model = resolve_model(ctx, None, model)
    info = {"model": model, **describe(locate(model))}
    if as_json:
        emit_json(info)
    else:
        from .render import print_description

        print_description(info)


COMMANDS = [tokenize, predict, continue_, models]
