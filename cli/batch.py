"""Batch mode for score, predict and continue: one input per line in, one JSON result per line out.

Lines are read one at a time and each result is written (and flushed) before the next line is
read, so memory stays flat however long the input and a reader downstream sees results at once.

The rules, for people scripting with jq:
- Every input line gives exactly one output line, in order, except a blank line (only spaces, tabs,
  CR) in JSON mode, which is skipped as jq skips it. With --lines every line is a text, blank ones too,
  so the output lines up with the input.
- Every output line has "line" (the input line number, counting from 1, blank lines included) and
  "error": null on success, or a one-line message when that line failed (then it has no result
  fields). `jq 'select(.error)'` finds the failures. The other fields of an input object are passed
  through; where one has the name of a field llmx writes ("line", "error", "model", ...), llmx's
  field wins and a warning on stderr names it once.
- Output is always valid JSON: a number JSON cannot hold (NaN, Infinity: in a result, or from an
  input line such as {"x": NaN}) is written as null, with a warning on stderr naming the field; a
  lone surrogate in a passed-through string is written back as its \\uXXXX escape.
- A line that is not a JSON object, has numbers too long (over 4300 digits) or nesting too deep for
  the parser, or whose "text" is missing, not a string or holds a lone surrogate, gets an error line.
- On SIGTERM the result line being written is finished, then llmx exits with status 143.
If any line failed the command exits 1 after the last line, with a one-line summary on stderr.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from contextlib import contextmanager
from typing import Callable

import click

from .engine.errors import InputError, LlmxError
from .data import LONE_SURROGATE, to_json
from .notices import warn

Handler = Callable[[str, Callable[[str], None]], dict]  # (text, notice) -> the JSON result for that text

jsonl_option = click.option(
    "--jsonl", is_flag=False, flag_value="-", default=None, metavar="[FILE]",
    help='Batch mode: read one JSON object per line from FILE (stdin when no FILE or -), take its "text", '
         'and print one JSON result per line, in order, with the object\'s other fields passed through; '
         'each result has "line" (its input line) and "error" (null, or what went wrong). '
         "Blank lines are skipped.")
lines_option = click.option("--lines", is_flag=True, help="With --jsonl: each input line is plain text, not JSON.")

RESERVED = ("line", "error")  # written last on every output line, over input fields of the same name
JSON_TYPES = {dict: "an object", list: "an array", bool: "a boolean", int: "a number", float: "a number",
              type(None): "null"}


def batch_options(command):
    return jsonl_option(lines_option(command))


class BatchError(LlmxError):
    """Some lines of a batch failed; their error objects are in the output."""


class Terminated(BaseException):
    """SIGTERM arrived: stop after the current result line (a BaseException, like KeyboardInterrupt,
    so that no `except Exception` on the way swallows it)."""


def is_batch(text: str | None, jsonl: str | None, lines: bool, svg: str | None = None) -> bool:
    """Whether the command runs in batch mode; usage errors for options that do not go together."""
    if jsonl is not None and svg is not None:
        raise click.UsageError("--svg saves the view of one text; --jsonl prints JSON lines: drop one of them")
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
    failed = written = 0
    replaced: set[str] = set()  # input field names already warned about
    with whole_lines() as write:
        for number, raw in enumerate(source, start=1):
            if not lines and not raw.strip(b" \t\r\n"):
                continue
            result = result_for(raw, number, lines, handle, replaced)
            write(result_line(result, number))
            failed += result["error"] is not None
            written += 1
    if failed:
        raise BatchError(f"{failed} of {written} input lines failed: their results have "
                         '"error": "..." (the others have "error": null)')


def result_for(raw: bytes, number: int, lines: bool, handle: Handler, replaced: set[str]) -> dict:
    """The output object for one input line: passed-through fields, then the result or the error."""
    notice = lambda message: warn(f"line {number}: {message}")  # noqa: E731
    passed = {}
    try:
        record = parse_line(raw, lines)
        passed = {key: value for key, value in record.items() if key != "text"}
        own = {**handle(text_of(record), notice), "line": number, "error": None}
    except LlmxError as e:
        own = {"line": number, "error": str(e)}
    for key in sorted(passed.keys() & own.keys() - replaced):
        replaced.add(key)
        warn(f"line {number}: the input field {key!r} is replaced by llmx's own in the results (here and on "
             "later lines): rename it to keep it")
    return {**{key: value for key, value in passed.items() if key not in own}, **own}


def result_line(result: dict, number: int) -> str:
    """One line of JSON for `result`; an error line when it cannot be written (nesting too deep)."""
    try:
        line, nonfinite = to_json(result)
    except RecursionError:
        return to_json({"line": number, "error": "a passed-through field is nested too deep to write back: "
                                                 "flatten it or drop it"})[0]
    for path in nonfinite:
        warn(f"line {number}: {path} is not a finite number, which JSON cannot hold: written as null")
    return line


@contextmanager
def whole_lines():
    """A writer of result lines to stdout, each written whole and flushed. On SIGTERM while a line is
    being written, the line is finished and then `Terminated` is raised; at any other time at once."""
    state = {"writing": False, "terminated": False}

    def on_sigterm(signum, frame):
        state["terminated"] = True
        if not state["writing"]:
            raise Terminated

    def write(line: str) -> None:
        state["writing"] = True
        write_all((line + "\n").encode("utf-8"))
        state["writing"] = False
        if state["terminated"]:
            raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread: signals cannot be caught here
        previous = None
    try:
        yield write
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def write_all(data: bytes) -> None:
    """`data` to stdout, all of it, now: os.write in a loop, as a signal may cut a write to a pipe short
    (a BufferedWriter can then return with the rest unwritten)."""
    sys.stdout.flush()
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (a test's captured output): write it there
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def text_of(record: dict) -> str:
    """The "text" field of an input object, which must be a string that is all characters."""
    if "text" not in record:
        others = ", ".join(map(repr, (key for key in record if key != "text")))
        raise InputError('the object has no "text" field: ' + (f"it has {others}" if others else "it is empty")
                         + ' (give {"text": "..."})')
    text = record["text"]
    if not isinstance(text, str):
        raise InputError(f'the "text" field is {JSON_TYPES.get(type(text), type(text).__name__)}, not a string: '
                         'give {"text": "..."}')
    if (bad := LONE_SURROGATE.search(text)) is not None:
        raise InputError(f'the "text" field has a lone surrogate (\\u{ord(bad[0]):04x} at character {bad.start()}), '
                         "which is not a character: fix the escapes of the line")
    return text


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
    except RecursionError:
        raise InputError("the line's JSON is nested too deep to read: flatten it") from None
    except ValueError as e:  # an integer over sys.get_int_max_str_digits() digits
        raise InputError(f"the line's JSON cannot be read ({e.args[0].split(';')[0]}): "
                         "write such a number as a string") from None
    if not isinstance(record, dict):
        raise InputError(f'the line is JSON but not an object (it is {JSON_TYPES.get(type(record), "a string")}): '
                         'give {"text": "..."}, or plain text with --lines') from None
    return record
