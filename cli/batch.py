"""Batch mode for score, predict and continue: one input per line in, one JSON result per line out.

Lines are read one at a time and each result is written (and flushed) before the next line is
read, so memory stays flat however long the input and a reader downstream sees results at once.
A line that cannot be handled becomes {"line": N, "error": "..."} and the batch goes on; the
command then exits 1 with a one-line summary on stderr.
"""

from __future__ import annotations

import json
import sys
from typing import Callable

import click

from .engine.errors import InputError, LlmxError
from .inputs import warn

Handler = Callable[[str, Callable[[str], None]], dict]  # (text, notice) -> the JSON result for that text

jsonl_option = click.option(
    "--jsonl", is_flag=False, flag_value="-", default=None, metavar="[FILE]",
    help='Batch mode: read one JSON object per line from FILE (stdin when no FILE or -), take its "text", '
         "and print one JSON result per line, in order, with the object's other fields passed through.")
lines_option = click.option("--lines", is_flag=True, help="With --jsonl: each input line is plain text, not JSON.")


def batch_options(command):
    return jsonl_option(lines_option(command))


class BatchError(LlmxError):
    """Some lines of a batch failed; their error objects are in the output."""


def is_batch(text: str | None, jsonl: str | None, lines: bool) -> bool:
    """Whether the command runs in batch mode; usage errors for options that do not go together."""
    if jsonl is None:
        if lines:
            raise click.UsageError("--lines goes with --jsonl (e.g. `... --jsonl --lines < texts.txt`)")
        return False
    if text is not None:
        raise click.UsageError("--jsonl reads its texts from a file or stdin: drop the TEXT argument")
    return True


def run_batch(jsonl: str, lines: bool, handle: Handler) -> None:
    """Apply `handle` to the text of each line of file `jsonl` ('-': stdin); print each result as a JSON line."""
    if jsonl == "-":
        handle_lines(sys.stdin.buffer, lines, handle)
        return
    try:
        source = open(jsonl, "rb")
    except OSError as e:
        raise InputError(f"cannot read {jsonl}: {e.strerror}") from None
    with source:
        handle_lines(source, lines, handle)


def handle_lines(source, lines: bool, handle: Handler) -> None:
    failed = number = 0
    for number, raw in enumerate(source, start=1):
        passed = {}
        try:
            record = parse_line(raw, lines)
            passed = {key: value for key, value in record.items() if key != "text"}
            text = record.get("text")
            if not isinstance(text, str):
                raise InputError('the object has no "text" field (a string): '
                                 + ("it has " + ", ".join(map(repr, passed)) if passed else "it is empty"))
            result = {**passed, **handle(text, lambda message: warn(f"line {number}: {message}"))}
        except LlmxError as e:
            failed += 1
            result = {**passed, "line": number, "error": str(e)}
        click.echo(json.dumps(result, ensure_ascii=False))  # click.echo flushes
    if failed:
        raise BatchError(f"{failed} of {number} input lines failed: "
                         'their results are {"line": N, "error": "..."} objects')


def parse_line(raw: bytes, lines: bool) -> dict:
    """The line as {"text": ..., other fields}: a JSON object, or with `lines` the line itself as text."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"the line is not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})") from None
    line = line[:-2] if line.endswith("\r\n") else line.removesuffix("\n")
    if lines:
        return {"text": line}
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(f"the line is not valid JSON ({e}): give one object per line, "
                         'like {"text": "..."}, or plain text with --lines') from None
    if not isinstance(record, dict):
        raise InputError(f'the line is JSON but not an object (it is a {type(record).__name__}): '
                         'give {"text": "..."}, or plain text with --lines')
    return record
