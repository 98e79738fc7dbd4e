"""Batch mode for score, predict and continue: one input per line in, one JSON result per line out.

Lines are read in micro-batches of at most --batch-size lines, and each batch's results are written (and
flushed) before the next batch is read, so memory stays flat however long the input. A batch is what has
arrived: llmx never waits for more input while it holds lines it could run, so a writer that waits for
each result before it writes the next line gets it at once. `continue` runs a batch's lines together,
one pass over the weights per token for all of them (engine/generate_batch.py); predict and score run
them one by one. Results are the same whatever the batch size.

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
import select
import stat
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

import click

from .engine.errors import InputError, LlmxError
from .data import LONE_SURROGATE, to_json
from .notices import warn
from .signals import terminate_between_writes

Notice = Callable[[str], None]
Handler = Callable[[str, Notice], dict]  # (text, notice) -> the JSON result for that text
# (texts, a notice per text) -> per text its JSON result, or the LlmxError that text failed with
BatchHandler = Callable[[list[str], list[Notice]], list["dict | LlmxError"]]
DEFAULT_BATCH_SIZE = 16

jsonl_option = click.option(
    "--jsonl", is_flag=False, flag_value="-", default=None, metavar="[FILE]",
    help='Batch mode: read one JSON object per line from FILE (stdin when no FILE or -), take its "text", '
         'and print one JSON result per line, in order, with the object\'s other fields passed through; '
         'each result has "line" (its input line) and "error" (null, or what went wrong). '
         "Blank lines are skipped.")
lines_option = click.option("--lines", is_flag=True, help="With --jsonl: each input line is plain text, not JSON.")
batch_size_option = click.option(
    "--batch-size", type=click.IntRange(min=1), metavar="N",
    help=f"With --jsonl (or continue -n): run up to N texts together (default {DEFAULT_BATCH_SIZE}); continue "
         "generates them in one pass over the weights per token. Only lines that have already arrived are "
         "batched, and results are the same for any N.")

RESERVED = ("line", "error")  # written last on every output line, over input fields of the same name
JSON_TYPES = {dict: "an object", list: "an array", bool: "a boolean", int: "a number", float: "a number",
              type(None): "null"}


def batch_options(command):
    return jsonl_option(lines_option(batch_size_option(command)))


class BatchError(LlmxError):
    """Some lines of a batch failed; their error objects are in the output."""


def is_batch(text: str | None, jsonl: str | None, lines: bool, svg: str | None = None,
             batch_size: int | None = None, samples: int = 1) -> bool:
    """Whether the command runs in batch mode; usage errors for options that do not go together."""
    if jsonl is not None and svg is not None:
        raise click.UsageError("--svg saves the view of one text; --jsonl prints JSON lines: drop one of them")
    if jsonl is None:
        if lines:
            raise click.UsageError("--lines goes with --jsonl (e.g. `... --jsonl --lines < texts.txt`)")
        if batch_size is not None and samples == 1:
            raise click.UsageError("--batch-size goes with --jsonl (or with continue -n)")
        return False
    if text is not None:
        raise click.UsageError("--jsonl reads its texts from a file or stdin: drop the TEXT argument")
    return True


def run_batch(jsonl: str, lines: bool, handle: Handler, batch_size: int | None = None) -> None:
    """Apply `handle` to the text of each line of file `jsonl` ('-': stdin); print each result as a JSON line."""
    run_batches(jsonl, lines, per_row(handle), batch_size)


def run_batches(jsonl: str, lines: bool, handle_many: BatchHandler, batch_size: int | None = None) -> None:
    """As run_batch, with `handle_many` given the texts of up to `batch_size` lines at a time."""
    size = batch_size or DEFAULT_BATCH_SIZE
    if jsonl == "-":
        handle_lines(sys.stdin.buffer, lines, handle_many, size)
        return
    try:
        source = open(jsonl, "rb")
    except OSError as e:
        raise InputError(f"cannot read {jsonl}: {e.strerror}") from None
    with source:
        handle_lines(source, lines, handle_many, size)


def per_row(handle: Handler) -> BatchHandler:
    """A batch handler that runs `handle` on each text in turn, each text's error its own."""
    def handle_many(texts: list[str], notices: list[Notice]) -> list[dict | LlmxError]:
        return [outcome(handle, text, notice) for text, notice in zip(texts, notices)]
    return handle_many


def outcome(handle: Handler, text: str, notice: Notice) -> dict | LlmxError:
    try:
        return handle(text, notice)
    except LlmxError as e:
        return e


def handle_lines(source, lines: bool, handle_many: BatchHandler, batch_size: int = 1) -> None:
    failed = written = 0
    replaced: set[str] = set()  # input field names already warned about
    with whole_lines() as write:
        for batch in micro_batches(source, lines, batch_size):
            for (number, _), result in zip(batch, batch_results(batch, lines, handle_many, replaced)):
                write(result_line(result, number))
                failed += result["error"] is not None
                written += 1
    if failed:
        raise BatchError(f"{failed} of {written} input lines failed: their results have "
                         '"error": "..." (the others have "error": null)')


def batch_results(batch: list[tuple[int, bytes]], lines: bool, handle_many: BatchHandler,
                  replaced: set[str]) -> list[dict]:
    """The output objects for (line number, line) pairs: passed-through fields, then the result or the error."""
    parsed = [parse_record(raw, lines) for _, raw in batch]  # (passed fields, text or the line's error)
    todo = [i for i, (_, text) in enumerate(parsed) if isinstance(text, str)]
    done = handle_many([parsed[i][1] for i in todo], [line_notice(batch[i][0]) for i in todo])
    outcomes = {**{i: text for i, (_, text) in enumerate(parsed)}, **dict(zip(todo, done))}
    return [merged(passed, outcomes[i], number, replaced) for i, ((number, _), (passed, _)) in
            enumerate(zip(batch, parsed))]


def result_for(raw: bytes, number: int, lines: bool, handle: Handler, replaced: set[str]) -> dict:
    """The output object for one input line: passed-through fields, then the result or the error."""
    return batch_results([(number, raw)], lines, per_row(handle), replaced)[0]


def line_notice(number: int) -> Notice:
    return lambda message: warn(f"line {number}: {message}")


def parse_record(raw: bytes, lines: bool) -> tuple[dict, str | LlmxError]:
    """(the line's fields other than "text", its text or why the line cannot be run)."""
    try:
        record = parse_line(raw, lines)
    except LlmxError as e:
        return {}, e
    passed = {key: value for key, value in record.items() if key != "text"}
    try:
        return passed, text_of(record)
    except LlmxError as e:
        return passed, e


def merged(passed: dict, result: dict | LlmxError, number: int, replaced: set[str]) -> dict:
    """Passed-through fields, then llmx's own (the result, "line", "error"), warning once per replaced name."""
    if isinstance(result, LlmxError):
        own = {"line": number, "error": str(result)}
    else:
        own = {**result, "line": number, "error": None}
    for key in sorted(passed.keys() & own.keys() - replaced):
        replaced.add(key)
        warn(f"line {number}: the input field {key!r} is replaced by llmx's own in the results (here and on "
             "later lines): rename it to keep it")
    return {**{key: value for key, value in passed.items() if key not in own}, **own}


def micro_batches(source, lines: bool, size: int) -> Iterator[list[tuple[int, bytes]]]:
    """(line number, line) lists of at most `size` lines, blank lines left out in JSON mode; a list is handed
    on as soon as the next line has not arrived yet."""
    reader, number, batch = LineReader(source), 0, []
    while True:
        raw = reader.line(wait=not batch)
        if raw is None:  # nothing more without waiting for the writer: run what has arrived
            yield batch
            batch = []
            continue
        if raw == b"":
            break
        number += 1
        if not lines and not raw.strip(b" \t\r\n"):
            continue
        batch.append((number, raw))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class LineReader:
    """The lines of a binary stream, with a way to ask for one only if it has arrived.

    A file on disk always has its next line; a pipe or a terminal is read through its descriptor into a
    buffer of our own, with select() saying whether more has arrived. Where that cannot be done (no
    descriptor, as in tests; Windows), lines on disk or in memory are read as usual and a pipe gives
    one line per batch.
    """

    def __init__(self, source):
        self.source, self.fd, self.buffer, self.eof = source, waiting_fd(source), bytearray(), False
        self.never_waits = self.fd is None and not is_pipe(source)

    def line(self, wait: bool) -> bytes | None:
        """The next line (b"" at the end of the input); None when `wait` is False and it has not arrived."""
        if self.fd is None:
            return self.source.readline() if wait or self.never_waits else None
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0 or self.eof:
                line = bytes(self.buffer[:end + 1] if end >= 0 else self.buffer)
                del self.buffer[:len(line)]
                return line
            if not wait and not select.select([self.fd], [], [], 0)[0]:
                return None
            chunk = os.read(self.fd, 1 << 16)
            self.eof = not chunk
            self.buffer += chunk


def waiting_fd(source) -> int | None:
    """The descriptor of a pipe, socket or terminal that select() can watch; None for anything else."""
    try:
        fd = source.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):
        return None
    return fd if not stat.S_ISREG(mode) and sys.platform != "win32" else None


def is_pipe(source) -> bool:
    """Whether reading ahead in `source` could wait for a writer (a stream that is not a file on disk)."""
    try:
        return not stat.S_ISREG(os.fstat(source.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):
        return False


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
    with terminate_between_writes() as writing:
        def write(line: str) -> None:
            with writing():
                write_all((line + "\n").encode("utf-8"))

        yield write


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
