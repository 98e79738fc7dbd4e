"""`llmx finetune`: train LoRA adapters (or every weight) on text or JSONL; `llmx finetune merge`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..inputs import load_model
from ..notices import saved
from ..options import SEED, model_option, several_values

EXAMPLES = """\b
Examples:
  llmx finetune -m gpt2 --data essay.txt notes.txt --out essay-lora --steps 20 --ctx 16
  llmx finetune -m gpt2 --data questions.jsonl --ctx 8 --valid-fraction 0.3 --steps 4 --out qa --log qa.jsonl
  llmx finetune -m gpt2 --data essay.txt --ctx 16 --steps 2 --full --out gpt2-essay
  llmx finetune -m gpt2 --data essay.txt --ctx 16 --steps 2 --out e && llmx predict -m gpt2 --adapter e "The"
"""


@click.group(cls=several_values(click.Group, "--data"), invoke_without_command=True, epilog=EXAMPLES)
@model_option
@click.option("--data", multiple=True, metavar="FILE", help="Training text (.txt ...) or JSONL (.jsonl: \"text\", "
              "or \"prompt\" and \"completion\"), or a folder of them; several files after one --data.")
@click.option("--out", type=click.Path(file_okay=False), metavar="DIR", help="Where to write the adapter (or model).")
@click.option("--valid", "valid_file", metavar="FILE", help="Validation data, in the same formats as --data.")
@click.option("--valid-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Hold out this fraction of the --data rows for validation.")
@click.option("--train-on-prompt", is_flag=True, help="With prompt + completion records, train on the prompt too.")
@click.option("--full", is_flag=True, help="Train every weight and write a full model folder (no LoRA).")
@click.option("--lora-rank", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--lora-alpha", default=16.0, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--lora-targets", metavar="NAMES", help="Comma-separated modules (q_proj,v_proj ...; default: all linear).")
@click.option("--lora-last", type=click.IntRange(min=1), metavar="N", help="Adapt only the last N blocks.")
@click.option("--merge", is_flag=True, help="Also write the base with the adapter merged in, as a model folder in DIR/merged.")
@click.option("--steps", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--batch", default=4, show_default=True, type=click.IntRange(min=1), help="Rows per step.")
@click.option("--accumulate", default=1, show_default=True, type=click.IntRange(min=1),
              help="Split each batch into this many micro-batches (gradient accumulation), to save memory.")
@click.option("--ctx", "n_ctx", type=click.IntRange(min=1), help="Tokens per row [default: 256, or the model's context].")
@click.option("--lr", default=2e-4, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(min=0))
@click.option("--eval-every", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--save-every", type=click.IntRange(min=1), metavar="N", help="Save the output every N steps.")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--resume", type=click.Path(exists=True, file_okay=False), metavar="DIR",
              help="Continue the run whose --out was DIR (same options, --steps may grow).")
@click.option("--log", "log_file", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
              help="Write one JSON line per step: step, loss, val_loss, lr, tok_s.")
@click.pass_context
def finetune(ctx, model, data, out, valid_file, valid_fraction, train_on_prompt, full, lora_rank, lora_alpha,
             lora_targets, lora_last, merge, steps, batch, accumulate, **rest):
    """Fine-tune MODEL on your text: LoRA adapters (PEFT's layout, which peft and --adapter load) or --full.

    Progress goes to stderr; Ctrl-C saves the run so far (resume it with --resume) and exits 130.
    """
    if ctx.invoked_subcommand is not None:
        return
    if not data or not out:
        raise click.UsageError("give --data FILE (one or more) and --out DIR")
    if valid_file and valid_fraction:
        raise click.UsageError("give --valid or --valid-fraction, not both")
    if full and merge:
        raise click.UsageError("--full already writes a full model folder: leave out --merge")
    from ..engine.train.finetune import FinetuneOptions

    lm = load_model(model)
    options = FinetuneOptions(
        steps=steps, batch=batch, accumulate=accumulate, ctx=rest["n_ctx"] or min(256, lm.config.n_ctx - 1),
        lr=rest["lr"], warmup=rest["warmup"], full=full, lora_rank=lora_rank, lora_alpha=lora_alpha,
        targets=tuple(lora_targets.split(",")) if lora_targets else None, last_blocks=lora_last,
        eval_every=rest["eval_every"], seed=rest["seed"])
    run(lm, model, options, data, valid_file, valid_fraction, train_on_prompt, Path(out), merge, rest)


def run(lm, model, options, data, valid_file, valid_fraction, train_on_prompt, out: Path, merge: bool, rest) -> None:
    from ..engine.train.data import load_data
    from ..engine.train.finetune import Finetune
    from ..views.finetune import training_progress

    train = load_data(list(data), lm.tokenizer, options.ctx, train_on_prompt)
    valid = load_data([valid_file], lm.tokenizer, options.ctx, train_on_prompt) if valid_file else None
    if valid_fraction:
        train, valid = train.split(valid_fraction, options.seed)
    tune = Finetune(lm, options, train, valid)
    if rest["resume"]:
        tune.resume(Path(rest["resume"]))
    log = open(rest["log_file"], "a", encoding="utf-8") if rest["log_file"] else None

    def on_step(p) -> None:
        update(p)
        if log:  # before stopping, so that the log has the step a Ctrl-C saves
            log.write(json.dumps({"step": p.step, "loss": p.loss, "val_loss": p.val_loss, "lr": p.lr,
                                  "tok_s": p.tok_s}) + "\n")
            log.flush()
        stop.check()

    stop = StopAfterStep()
    try:
        with training_progress(options.steps, tune.step) as update, stop:
            tune.run(on_step, lambda step: tune.save(out, merge=merge, base=model), rest["save_every"])
    except KeyboardInterrupt:
        if stop.at_once:  # the step under way may have updated some weights and not others: nothing to save
            raise
        tune.save(out, merge=merge, base=model)
        saved(f"{out} (step {tune.step}; continue with --resume {out})")
        raise
    finally:
        if log:
            log.close()
    tune.save(out, merge=merge, base=model)
    saved(str(out))


class StopAfterStep:
    """Ctrl-C while training: finish the step under way (so no half-updated weights are saved), then raise
    KeyboardInterrupt; a second Ctrl-C interrupts at once."""

    asked = at_once = False

    def __enter__(self):
        import signal

        self.previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self.ask)
        return self

    def ask(self, signum, frame) -> None:
        if self.asked:
            self.at_once = True
            raise KeyboardInterrupt
        self.asked = True
        from ..notices import note

        note("stopping after this step (Ctrl-C again to stop at once, without saving)")

    def check(self) -> None:
        if self.asked:
            raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        import signal

        signal.signal(signal.SIGINT, self.previous)


@finetune.command(epilog="""\b
Examples:
  llmx finetune -m gpt2 --data essay.txt --ctx 16 --steps 2 --out e && llmx finetune merge -m gpt2 --adapter e --out m
  llmx finetune -m gpt2 --data essay.txt --ctx 16 --steps 2 --out e --merge && llmx predict -m e/merged "The"
""")
@model_option
@click.option("--out", required=True, type=click.Path(file_okay=False), metavar="DIR")
def merge(model, out):
    """Write MODEL with its --adapter merged in, as a Hugging Face model folder llmx and transformers load."""
    from ..engine.train.export import save_model_folder
    from ..engine.train.params import to_params

    ctx = click.get_current_context()
    from ..options import ADAPTER

    if not ctx.meta.get(ADAPTER):
        raise click.UsageError("give the --adapter DIR to merge into -m MODEL")
    lm = load_model(model)
    save_model_folder(Path(out), to_params(lm.weights), lm)
    saved(out)


COMMANDS = [finetune]
