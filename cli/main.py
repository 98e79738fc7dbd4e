"""The `llmx` command group and the one place where errors become messages and exit statuses.

Commands import the engine and Rich only when they run, so `llmx --help` stays fast.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

import click

from .signals import Terminated
from .commands import core, features, finetune, inspect, models, sae, score, why
from .notices import error
from .options import MODEL_HELP

EPILOG = """\b
Examples:
  llmx tokenize "Hullo, my name is"
  llmx predict "Hullo, my name is" --top 10
  llmx score "Hullo, my name is"
  echo "Hullo, my name is" | llmx continue --seed 1
  llmx -m gpt2 tokenize --count "Hullo, my name is"
"""


class ReaderGone(Exception):
    """Standard output's reader went away (`llmx ... | head -1`)."""


@contextmanager
def reader_gone_on_broken_pipe():
    """BrokenPipeError, and Rich's SystemExit(1) for it (Console.on_broken_pipe), as ReaderGone, which
    click does not turn into an exit status of its own: main() gives every command the same one."""
    try:
        yield
    except BrokenPipeError:
        raise ReaderGone from None
    except SystemExit as e:
        if isinstance(e.__context__, BrokenPipeError):
            raise ReaderGone from None
        raise


class Llmx(click.Group):
    """The command group; a closed stdout while parsing (--help, --version) or running is ReaderGone."""

    def make_context(self, *args, **kwargs):
        with reader_gone_on_broken_pipe():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with reader_gone_on_broken_pipe():
            return super().invoke(ctx)


@click.group(cls=Llmx, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llmx", prog_name="llmx", message="%(prog)s %(version)s")
@click.option("-m", "--model", envvar="LLMX_MODEL", metavar="MODEL",
              help="The model for the command that follows (its own -m wins). " + MODEL_HELP)
def cli(model):
    """See what a language model does with your text: its tokens, its next-token
    probabilities, its continuations, computed by a NumPy engine you can read.

    Models: a Hugging Face Hub id (default openai-community/gpt2, downloaded once into the
    Hugging Face cache), a local model directory or a .gguf file, chosen with -m (before or
    after the command) or LLMX_MODEL.
    """


for command in [*core.COMMANDS, *models.COMMANDS, score.score, *inspect.COMMANDS, *why.COMMANDS, *finetune.COMMANDS,
                *sae.COMMANDS, *features.COMMANDS]:
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: exit 0 on success (and when the reader of stdout went away), 1 on a runtime error,
    2 on a usage error, 130 on Ctrl-C, 143 on SIGTERM (in batch mode after the result line being written)."""
    debug = os.environ.get("LLMX_DEBUG", "") not in ("", "0")
    set_blas_threads(debug)
    try:
        with reader_gone_on_broken_pipe():
            status = cli.main(args=argv, prog_name="llmx", standalone_mode=False)
            sys.stdout.flush()
    except click.UsageError as e:
        if debug:
            raise
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        error(f"{e.format_message()}{hint}")
        sys.exit(2)
    except (KeyboardInterrupt, click.Abort):
        error("interrupted")
        sys.exit(130)
    except ReaderGone:  # `llmx continue ... | head -1`: nobody wants the rest; stop quietly, as a success
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the flush at exit fails no more
        sys.exit(0)
    except Terminated:
        sys.exit(143)
    except click.ClickException as e:
        if debug:
            raise
        error(e.format_message())
        sys.exit(e.exit_code)
    except Exception as e:
        from .engine.errors import LlmxError

        if debug or not isinstance(e, LlmxError):
            raise
        error(str(e))
        sys.exit(1)
    sys.exit(status if isinstance(status, int) else 0)


def set_blas_threads(debug: bool) -> None:
    """LLMX_THREADS, or one BLAS thread per core other processes leave idle: see engine/threads.py.
    Decided before NumPy loads its BLAS, which reads its thread count once."""
    from .engine.errors import InputError
    from .engine.threads import blas_threads, use_blas_threads

    try:
        threads = blas_threads(os.environ)
    except InputError as e:
        if debug:
            raise
        error(str(e))
        sys.exit(1)
    if threads is not None:
        use_blas_threads(threads)

