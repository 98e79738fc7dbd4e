"""SIGTERM while `llmx continue` streams tokens: the token being written is finished and flushed, then the command
exits with status 143, as batch mode does (tests/test_batch.py)."""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass

import pytest
from test_cli import run

from llmx.signals import Terminated
from llmx.commands.core import stream

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals as on Linux")


@dataclass(frozen=True)
class Step:
    text: str


class Tokens:
    """A stand-in for a Generation: its steps' texts, with SIGTERM sent to this process before step `kill_at`."""

    def __init__(self, texts: list[str], kill_at: int | None = None):
        self.texts, self.kill_at = texts, kill_at

    def __iter__(self):
        for i, text in enumerate(self.texts):
            if i == self.kill_at:
                os.kill(os.getpid(), signal.SIGTERM)
            yield Step(text)

    @property
    def text(self) -> str:
        return "".join(self.texts)


class Stdout:
    """A standard output that gets SIGTERM half-way through writing `cut`; `flushed` is what reached the reader."""

    def __init__(self, cut: str):
        self.cut, self.parts, self.flushed = cut, [], ""

    def write(self, text: str) -> None:
        if text == self.cut:
            self.parts.append(text[:2])
            os.kill(os.getpid(), signal.SIGTERM)
            text = text[2:]
        self.parts.append(text)

    def flush(self) -> None:
        self.flushed = "".join(self.parts)


def test_sigterm_while_a_token_is_written_finishes_and_flushes_it_then_stops(monkeypatch):
    out, before = Stdout(cut=" world"), signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(sys, "stdout", out)
    with pytest.raises(Terminated):
        stream(Tokens(["Hullo", " world", " and", " more"]), "Say: ")
    assert out.flushed == "Say: Hullo world"
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back


def test_sigterm_between_tokens_stops_at_once_after_the_last_whole_token(monkeypatch):
    out = Stdout(cut="never written")
    monkeypatch.setattr(sys, "stdout", out)
    with pytest.raises(Terminated):
        stream(Tokens(["Hullo", " world", " and"], kill_at=2), "")
    assert out.flushed == "Hullo world"


def test_continue_exits_143_on_sigterm_with_the_tokens_written_so_far(tiny_gpt2, monkeypatch):
    import llmx.engine.generate as generate

    m = ["-m", str(tiny_gpt2), "--temperature", "0"]
    three = run("continue", *m, "--max-tokens", "3", "Hullo, my name is")
    calls = []

    def sample_then_sigterm(*args):
        calls.append(1)
        if len(calls) == 4:  # after three tokens were written
            os.kill(os.getpid(), signal.SIGTERM)
        return sample(*args)

    sample = generate.sample
    monkeypatch.setattr(generate, "sample", sample_then_sigterm)
    r = run("continue", *m, "--max-tokens", "20", "Hullo, my name is")
    assert (r.exit_code, r.stderr) == (143, "")
    assert three.exit_code == 0 and r.stdout == three.stdout.removesuffix("\n") and r.stdout
