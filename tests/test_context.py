"""The one context-length policy (engine/context.py): the rule itself, and every command that follows it."""

from __future__ import annotations

import numpy as np
import pytest
from llmx.engine import interp
from llmx.engine.context import fit, fit_and_tell, room, slide
from test_cli import run

LONG = "word " * 70  # 71 tokens with GPT-2's tokenizer; the tiny model's context is 64


@pytest.mark.parametrize("n_ids, n_ctx, reserve, kept", [
    (10, 64, 0, 10),  # fits: nothing dropped
    (71, 64, 0, 64),  # too long: the last n_ctx
    (60, 64, 10, 54),  # room for the tokens to generate
    (60, 64, 50, 32),  # ... but never less than half the context
    (20, 64, 50, 20),  # a prompt shorter than half the context is kept whole
    (3, 2, 1, 1),  # and never less than one token
    (5, 1, 0, 1),
])
def test_fit_keeps_the_last_tokens_that_fit(n_ids, n_ctx, reserve, kept):
    ids = list(range(100, 100 + n_ids))
    assert min(n_ids, room(n_ids, n_ctx, reserve)) == kept
    assert fit(ids, n_ctx, reserve) == (ids[-kept:], n_ids - kept)


def test_one_notice_only_when_tokens_are_dropped():
    notices = []
    assert fit_and_tell([1, 2, 3], 4, notices.append) == [1, 2, 3] and notices == []
    assert fit_and_tell([1, 2, 3, 4, 5], 4, notices.append, doing="reading") == [2, 3, 4, 5]
    assert notices == ["the text has 5 tokens, more than the model's context of 4: reading the last 4"]
    assert slide(list(range(10)), 8, notices.append) == [6, 7, 8, 9] and "continuing from the last 4 tokens" in notices[-1]


def test_predict_on_a_long_text_is_predict_on_its_last_tokens(tiny_gpt2_model):
    lm, notices = tiny_gpt2_model, []
    ids = lm.prompt_ids(LONG)
    assert len(ids) == 71
    assert lm.predict(ids, 3, on_notice=notices.append) == lm.predict(ids[-64:], 3)
    assert notices == ["the text has 71 tokens, more than the model's context of 64: predicting from the last 64"]


def test_analyses_on_a_long_text_look_at_its_last_tokens(tiny_gpt2_model):
    lm, notices = tiny_gpt2_model, []
    ids = lm.prompt_ids(LONG)
    lens = interp.logit_lens(lm, ids, top=2, positions=[-1], on_notice=notices.append)
    assert lens.ids == ids[-64:] and lens.top == interp.logit_lens(lm, ids[-64:], top=2, positions=[-1]).top
    att = interp.attention(lm, ids, layer=0, on_notice=notices.append)
    np.testing.assert_array_equal(att.pattern, interp.attention(lm, ids[-64:], layer=0).pattern)
    ex = interp.explain(lm, ids, on_notice=notices.append)
    assert ex == interp.explain(lm, ids[-64:])
    assert len(notices) == 3 and all("more than the model's context of 64: keeping the last 64" in n for n in notices)


def test_score_slides_windows_instead(tiny_gpt2_model):
    notices = []
    s = tiny_gpt2_model.score(tiny_gpt2_model.prompt_ids(LONG), on_notice=notices.append)
    assert s.windows == 2 and len(s.scored) == 70 and "sliding windows" in notices[0]


@pytest.mark.parametrize("command", [["explain"], ["lens"], ["attention", "--layer", "0"]])
def test_inspect_commands_warn_and_run_on_a_long_text(tiny_gpt2, command):
    r = run(command[0], "-m", str(tiny_gpt2), LONG, *command[1:], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.stderr
    assert "warning: the text has 71 tokens, more than the model's context of 64: keeping the last 64" in r.stderr
