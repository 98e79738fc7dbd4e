"""The `llmx` command group and the one place where errors become messages and exit statuses.

Commands import the engine and Rich only when they run, so `llmx --help` stays fast.
"""

from __future__ import annotations

import os
import sys

import click

from . import core, inspect, score

EPILOG = """\b
Examples:
  llmx tokenize "Hullo, my name is"
  llmx predict "Hullo, my name is" --top 10
  llmx score "Hullo, my name is"
  echo "Hullo, my name is" | llmx continue --seed 1
"""


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llmx", prog_name="llmx", message="%(prog)s %(version)s")
def cli():
    """See what a language model does with your text: its tokens, its next-token
    probabilities, its continuations, computed by a NumPy engine you can read.

    Models: a Hugging Face Hub id (default openai-community/gpt2, downloaded once into the
    Hugging Face cache), a local model directory or a .gguf file, chosen with -m or LLMX_MODEL.
    """


for command in [*core.COMMANDS, score.score, *inspect.COMMANDS]:
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: exit 0 on success, 1 on a runtime error, 2 on a usage error, 130 on Ctrl-C."""
    debug = os.environ.get("LLMX_DEBUG", "") not in ("", "0")
    set_blas_threads(debug)
    try:
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
    except BrokenPipeError:  # the reader went away (`llmx continue ... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
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


def error(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
