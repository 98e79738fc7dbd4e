"""The core commands: tokenize, predict, continue. Each parses, calls the engine, builds its data, outputs it."""

from __future__ import annotations

import re
import sys
from functools import partial

import click

from ..batch import DEFAULT_BATCH_SIZE, batch_options, is_batch, run_batch, run_batches
from ..data import Decoded, Predictions, Truncated, continued_data, record, tokens_data
from ..engine.errors import InputError, LlmxError, count
from ..inputs import load_model, read_file, read_text
from ..notices import prefill_progress, warn
from ..options import json_option, model_option, sampling_options, seed_option, svg_option
from .common import current_width, emit_json, output, svg_errors
from .why import ablated, ablation_options

SVG_MAX_TOKENS = 5_000  # an SVG of more tokens is too large for a browser to show


@click.command(epilog="""\b
Examples:
  llmx tokenize "Hullo, my name is"
  llmx tokenize --ids "Hullo, my name is"        # 39 724 78 11 616 1438 318
  llmx tokenize --decode 39 724 78 11 616 1438 318
  llmx tokenize --decode --truncate 3 "39 724 78 11 616 1438 318"   # Hullo
  cat notes.txt | llmx tokenize --count
  llmx tokenize "Hullo, my name is" --svg tokens.svg
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
@svg_option
@json_option
def tokenize(text, model, only_ids, only_count, decode, truncate, special, svg, as_json):
    """Show how TEXT splits into tokens: a token view, a table of ids and pieces, the count.

    TEXT is read from stdin when it is '-' or absent. --ids and --count print only that and go with
    no other output option; --decode and --truncate print text, also as --json.
    """
    from ..engine import load_tokenizer

    check_tokenize_options(len(text), only_ids, only_count, as_json, decode, truncate, special, svg)
    text = read_text(" ".join(text) if text else None)
    tokenizer = load_tokenizer(model)  # the weights are not needed
    if decode:
        ids = parse_ids(text)[:truncate]
        return output_text(model, Decoded(ids, tokenizer.decode(ids)), as_json, svg)
    ids = tokenizer.encode(text, special=special)
    if truncate is not None:
        return output_text(model, Truncated(tokenizer.decode(ids[:truncate]), min(truncate, len(ids))), as_json, svg)
    if only_ids:
        click.echo(" ".join(map(str, ids)))
    elif only_count:
        click.echo(len(ids))
    else:
        output_tokens(model, tokens_data(tokenizer, ids), as_json, svg)


def output_tokens(model: str, data, as_json: bool, svg: str | None) -> None:
    """The tokens view streams to stdout (a text may have a million tokens); an SVG takes a few thousand."""
    from ..views.tokens import print_tokens, tokens_view

    if svg and data.count > SVG_MAX_TOKENS:
        raise InputError(f"--svg draws at most {SVG_MAX_TOKENS:,} tokens and the text has {data.count:,}: "
                         "give it a part of the text (e.g. `head -c 20000 FILE | llmx tokenize --svg FILE.svg`)")
    output(model, data, tokens_view, as_json, svg, "llmx tokenize", print_view=print_stream(print_tokens))


def print_stream(print_view):
    def printed(data) -> None:
        from ..render import stdout_console

        print_view(data, stdout_console())
    return printed


def output_text(model: str, data, as_json: bool, svg: str | None) -> None:
    """Decoded or truncated text: as it is on stdout (not laid out by Rich), or as JSON; --svg draws it."""
    from ..views.tokens import text_view

    output(model, data, text_view, as_json, svg, "llmx tokenize", print_view=lambda d: click.echo(d.text))


def check_tokenize_options(n_args: int, only_ids: bool, only_count: bool, as_json: bool, decode: bool,
                           truncate: int | None, special: bool, svg: str | None = None) -> None:
    """Usage errors for tokenize options that would otherwise be silently ignored."""
    if n_args > 1 and not decode:
        raise click.UsageError("TEXT is one argument: quote it (llmx tokenize \"Hullo, my name is\"); "
                               "only --decode reads several arguments (token ids)")
    given = [name for name, on in (("--ids", only_ids), ("--count", only_count), ("--json", as_json),
                                   ("--decode", decode), ("--truncate", truncate is not None),
                                   ("--svg", svg is not None)) if on]
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
  llmx predict "The capital of France is" --svg predictions.svg
  llmx predict "When Mary and John went to the store, John gave a drink to" --ablate 10.0,9.mlp --ablate-mode mean
""")
@click.argument("text", required=False)
@model_option
@click.option("--top", default=10, show_default=True, type=click.IntRange(min=1), help="How many tokens to show.")
@ablation_options
@svg_option
@json_option
@batch_options
def predict(text, model, top, ablate, ablate_mode, svg, as_json, jsonl, lines, batch_size):
    """Show the most likely next tokens after TEXT, with probabilities and logits.

    TEXT is read from stdin when it is '-' or absent; an empty TEXT predicts the first token.
    """
    from ..views.predict import predictions_view

    if is_batch(text, jsonl, lines, svg, batch_size):
        lm = load_model(model)
        run_batch(jsonl, lines, lambda t, notice: record(model, predict_text(lm, t, top, notice, ablate,
                                                                              ablate_mode)), batch_size)
        return
    text = read_text(text)
    lm = load_model(model)
    with prefill_progress() as on_progress:
        data = predict_text(lm, text, top, warn, ablate, ablate_mode, on_progress)
    output(model, data, predictions_view, as_json, svg, "llmx predict")


def predict_text(lm, text: str, top: int, notice, ablate=(), ablate_mode: str = "zero",
                 on_progress=None) -> Predictions:
    ids = lm.fit(lm.prompt_ids(text), notice, doing="predicting from")  # the engine's context policy
    return Predictions(len(ids), ablated(lm, ablate, ablate_mode, ids).predict(ids, top, on_progress=on_progress))


@click.command("continue", epilog="""\b
Examples:
  llmx continue "How high is Mt. Everest?" --max-tokens 40
  echo "Hullo, my name is" | llmx continue --seed 1 | wc -w
  llmx continue $'Q: What is 2+2?\\nA:' --temperature 0 --stop '\\n'   # $'..': a real newline
  grep -i everest notes.txt | llmx continue --context - "Q: How high is Mt. Everest?" --max-tokens 20
  llmx continue --jsonl questions.jsonl --seed 1 --max-tokens 20 > answers.jsonl
  llmx continue "Hullo, my name is" -n 4 --seed 1 --max-tokens 10     # samples with seeds 1, 2, 3, 4
  llmx continue "Hullo, my name is" -n 16 --max-tokens 10 --json | jq -r '.[].text'
  llmx continue "Hullo, my name is" --seed 1 --svg continuation.svg
  llmx continue "The capital of France is" --temperature 0 --max-tokens 5 --ablate 0.mlp
""")
@click.argument("text", required=False)
@model_option
@click.option("--max-tokens", "max_tokens", default=50, show_default=True, type=click.IntRange(min=0),
              help="Most tokens to generate.")
@sampling_options
@seed_option("Random seed (0 to 2**32-1): the same seed gives the same continuation.")
@click.option("--stop", multiple=True, help="Stop when this text appears (repeatable; \\n and \\t are understood).")
@click.option("--echo", is_flag=True,
              help='Print the prompt (with --context: the context, a blank line and TEXT) before the continuation; '
                   'with --json or --jsonl, put it in a "prompt" field.')
@click.option("--context", metavar="FILE",
              help="Put the text of FILE ('-': stdin) before TEXT: the prompt is the context, a blank line, then "
                   "TEXT. If they do not fit the window with --max-tokens, the context's start is dropped.")
@click.option("-n", "samples", default=1, show_default=True, type=click.IntRange(min=1), metavar="N",
              help="Sample N continuations of TEXT, generated together in batches of --batch-size "
                   f"(default {DEFAULT_BATCH_SIZE}). With --seed S, sample i (1..N) uses seed S+i-1 (mod 2**32): "
                   "sample 1 is what --seed S alone gives; without --seed, S is drawn at random. Each sample is "
                   "printed when it is done, under a line with its number and seed; --json prints a list.")
@click.option("--lookup/--no-lookup", default=True, show_default=True,
              help="With --temperature 0: guess the next tokens by copying what followed the last few tokens "
                   "earlier in the text, and check up to 15 guesses in one pass (the same tokens as without). "
                   "Fastest when the answer quotes the text (--context).")
@ablation_options
@svg_option
@json_option
@batch_options
def continue_(text, model, max_tokens, temperature, top_k, top_p, seed, stop, echo, context, samples, lookup, ablate,
              ablate_mode, svg, as_json, jsonl, lines, batch_size):
    """Continue TEXT, streaming tokens to stdout as they are sampled.

    TEXT is read from stdin when it is '-' or absent; an empty TEXT starts from <|endoftext|>.
    With --context, TEXT is a question about the context (retrieval-augmented prompts).
    """
    from ..engine import Sampling

    batch = is_batch(text, jsonl, lines, svg, batch_size, samples)
    if samples > 1 and (batch or svg):
        raise click.UsageError(f"-n samples one TEXT: drop {'--jsonl' if batch else '--svg'} (or -n)")
    if context == "-" and (jsonl == "-" if batch else text in (None, "-")):
        raise click.UsageError("--context - reads the context from stdin, so give the question as TEXT "
                               "(or the --jsonl input as a file)")
    context = read_file(context) if context is not None else None
    text = None if batch else read_text(text)
    options = dict(sampling=Sampling(temperature=temperature, top_k=top_k, top_p=top_p), seed=seed,
                   stop=tuple(map(unescape, stop)), ablation=(ablate, ablate_mode),
                   lookup=lookup)
    lm = load_model(model)
    if batch:
        run_batches(jsonl, lines, partial(continue_lines, lm, model, context, max_tokens, echo, options), batch_size)
        return
    if samples > 1:
        return continue_samples(lm, model, text, context, max_tokens, (samples, batch_size), echo, as_json, options)
    prompt = prompt_text(text, context)
    echoed = prompt if echo else None
    with prefill_progress() as on_progress:
        generation = start_generation(lm, text, context, max_tokens, warn, on_progress=on_progress, **options)
        if as_json:
            emit_json(record(model, continued_data(finish(generation), echoed)))
        else:
            stream(generation, echoed or "")
    if svg:  # the finished continuation, after its prompt (with or without --echo)
        from ..render import save_svg
        from ..views.continuation import continuation_view

        with svg_errors(svg):
            save_svg(partial(continuation_view, continued_data(generation, prompt)), svg, "llmx continue",
                     current_width())


def stream(generation, prompt: str):
    """Write the prompt (with --echo) and each token as it is sampled; end with a line end. On SIGTERM the
    token being written is finished and flushed, then the command ends with status 143."""
    from ..signals import terminate_between_writes

    out = sys.stdout
    with terminate_between_writes() as writing:
        with writing():
            out.write(prompt)
        for step in generation:
            with writing():
                out.write(step.text)
                out.flush()
        with writing():
            if not (prompt + generation.text).endswith("\n"):
                out.write("\n")
            out.flush()
    return generation


def prompt_text(text: str, context: str | None) -> str:
    """The prompt as built from TEXT and the context (see engine.prompting), before any cut to fit the window."""
    from ..engine.prompting import SEPARATOR

    if context is None or not context.rstrip():
        return text
    return context.rstrip() + SEPARATOR + text


def start_generation(lm, text: str, context: str | None, max_tokens: int, notice, ablation=((), "zero"), **options):
    """A `Generation` continuing TEXT, after the context if there is one (cut from its start to fit), with the
    (units, mode) of `ablation` knocked out (mean: over the prompt)."""
    if context is None:
        ids = lm.prompt_ids(text)
    else:
        from ..engine import with_context

        prompt = with_context(lm.tokenizer, context, text, lm.config.n_ctx - max_tokens)
        if prompt.dropped:
            whole = " (all of it)" if prompt.dropped == prompt.context_tokens else ""
            notice(f"the context ({prompt.context_tokens} tokens) and the question do not fit the model's "
                   f"context of {lm.config.n_ctx} tokens with --max-tokens {max_tokens}: dropped the first "
                   f"{count(prompt.dropped, 'token')} of the context{whole}")
        ids = prompt.ids
    return ablated(lm, *ablation, lm.fit(ids, reserve=max_tokens)).generate(ids, max_tokens, on_notice=notice,
                                                                             **options)


def continue_lines(lm, model: str, context: str | None, max_tokens: int, echo: bool, options: dict,
                   texts: list[str], notices: list) -> list:
    """The results of a micro-batch of --jsonl lines (an LlmxError for a line that failed), generated together."""
    outcomes, generations = {}, {}
    for i, (text, notice) in enumerate(zip(texts, notices)):
        try:
            generations[i] = start_generation(lm, text, context, max_tokens, notice, **options)
        except LlmxError as e:
            outcomes[i] = e
    for i, result in zip(generations, results_of(list(generations.values()))):
        outcomes[i] = result if isinstance(result, LlmxError) else record(
            model, continued_data(result, prompt_text(texts[i], context) if echo else None))
    return [outcomes[i] for i in range(len(texts))]


def results_of(generations: list) -> list:
    """Each generation's result, all run as one batch; should the batch fail, each alone (a failure its own)."""
    from ..engine.generate_batch import complete_all

    try:
        return complete_all(generations)
    except LlmxError:
        pass
    results = []
    for generation in generations:
        try:
            results.append(generation.result())
        except LlmxError as e:
            results.append(e)
    return results


def continue_samples(lm, model: str, text: str, context: str | None, max_tokens: int, counts: tuple[int, int | None],
                     echo: bool, as_json: bool, options: dict) -> None:
    """-n N: N samples of TEXT (seeds S, S+1, ...), in batches; each printed (or kept for --json) in order."""
    from ..engine.generate_batch import run_batch

    (n, batch_size), records = counts, []
    seeds, notice = sample_seeds(options["seed"], n), once(warn)
    prompt = prompt_text(text, context) if echo else None
    size = batch_size or DEFAULT_BATCH_SIZE
    for first in range(0, n, size):
        chunk = seeds[first:first + size]
        generations = [start_generation(lm, text, context, max_tokens, notice, **{**options, "seed": s}) for s in chunk]
        for k, result in in_order(run_batch(generations)):
            if as_json:
                records.append({**record(model, continued_data(result, prompt)), "seed": chunk[k]})
            else:
                sys.stdout.write(f"--- sample {first + k + 1} of {n}, seed {chunk[k]} ---\n")
                whole = (prompt or "") + result.text
                sys.stdout.write(whole if whole.endswith("\n") else whole + "\n")
                sys.stdout.flush()
    if as_json:
        emit_json(records)


def sample_seeds(seed: int | None, n: int) -> list[int]:
    """The seeds of -n's samples: S, S+1, ... (mod 2**32), S drawn at random when not given."""
    import random

    base = seed if seed is not None else random.SystemRandom().randrange(2**32)
    return [(base + i) % 2**32 for i in range(n)]


def in_order(finished):
    """(index, result) pairs arriving in any order, handed on in index order as soon as each can be."""
    waiting, following = {}, 0
    for index, result in finished:
        waiting[index] = result
        while following in waiting:
            yield following, waiting.pop(following)
            following += 1


def once(notice):
    """`notice`, saying each distinct message only once (N samples of one prompt share its notices)."""
    said = set()

    def tell(message: str) -> None:
        if message not in said:
            said.add(message)
            notice(message)
    return tell


def finish(generation):
    """The generation, run to its end (its result is then `generation.result()`)."""
    generation.result()
    return generation


COMMANDS = [tokenize, predict, continue_]
