"""Scoring: per-token log-probabilities and totals against transformers' loss, then the `score` command."""

from __future__ import annotations

import json
import math

import pytest
from test_cli import run

TEXT = "Hullo, my name is Ada and I like numbers."


@pytest.fixture
def lm(tiny_gpt2_model):
    return tiny_gpt2_model


@pytest.fixture
def hf(tiny_gpt2_reference):
    return tiny_gpt2_reference


def hf_loss(hf, ids: list[int]) -> float:
    import torch

    with torch.no_grad():
        return hf(torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()


def test_totals_agree_with_transformers_loss(lm, hf):
    ids = lm.tokenizer.encode(TEXT)
    score = lm.score(ids)
    assert score.tokens[0].logprob is None and len(score.scored) == len(ids) - 1
    assert math.isclose(score.perplexity, math.exp(hf_loss(hf, ids)), rel_tol=1e-4)
    assert math.isclose(score.mean_nll, -sum(t.logprob for t in score.scored) / (len(ids) - 1))
    assert score.n_bytes == len(TEXT.encode()) - 1  # "H", the unscored first token, is one byte
    assert math.isclose(score.bits_per_byte, score.total_nll / math.log(2) / score.n_bytes)
    assert all(math.isclose(t.bits, -t.logprob / math.log(2)) for t in score.scored)


def test_bos_scores_the_first_token_too(lm, hf):
    ids = lm.tokenizer.encode(TEXT)
    score = lm.score(ids, bos=True)
    assert [t.id for t in score.tokens] == ids and len(score.scored) == len(ids)
    assert math.isclose(score.perplexity, math.exp(hf_loss(hf, [50256] + ids)), rel_tol=1e-4)
    assert score.n_bytes == len(TEXT.encode())


def test_long_text_is_scored_in_sliding_windows(lm, hf):
    import torch

    ids = lm.tokenizer.encode("word and other words, " * 30)  # 151 tokens, the context is 64
    notices = []
    score = lm.score(ids, stride=20, on_notice=notices.append)
    assert score.windows == 1 + math.ceil((len(ids) - 64) / 20) == 6 and len(notices) == 1
    assert "151 tokens" in notices[0] and "6 sliding windows" in notices[0]
    expected, done, begin = {}, 1, 0  # Hugging Face's perplexity guide, token by token
    with torch.no_grad():
        while done < len(ids):
            end = min(begin + 64, len(ids))
            logprobs = torch.log_softmax(hf(torch.tensor([ids[begin:end]])).logits[0].double(), -1)
            expected.update({t: logprobs[t - 1 - begin, ids[t]].item() for t in range(done, end)})
            done, begin = end, begin + 20
    assert len(score.scored) == len(ids) - 1 == len(expected)
    assert max(abs(t.logprob - expected[i]) for i, t in enumerate(score.tokens) if i) < 1e-4


def test_a_one_token_text_needs_bos(lm):
    from llmx.engine import InputError

    with pytest.raises(InputError, match="--bos"):
        lm.score(lm.tokenizer.encode("Hi"))
    assert len(lm.score(lm.tokenizer.encode("Hi"), bos=True).scored) == 1
    with pytest.raises(InputError, match="stride"):
        lm.score(lm.tokenizer.encode(TEXT), stride=64)


@pytest.fixture(scope="module")
def m(tiny_gpt2):
    return ["-m", str(tiny_gpt2)]


def test_score_table_and_totals(m, lm):
    r = run("score", *m, "Hullo, my name is")
    assert r.exit_code == 0 and r.stderr == ""
    score = lm.score(lm.tokenizer.encode("Hullo, my name is"))
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["index", "id", "token", "logprob", "bits"]
    assert lines[2].split() == ["0", "39", "H", "—", "—"]
    assert lines[3].split() == ["1", "724", "ull", f"{score.tokens[1].logprob:.3f}", f"{score.tokens[1].bits:.2f}"]
    assert lines[6].split()[2] == "·my"
    assert lines[-4] == "6 of 7 tokens scored (the first has no context: --bos scores it too), 16 bytes"
    assert lines[-3:] == [f"mean NLL       {score.mean_nll:.4f} nats/token",
                          f"perplexity     {score.perplexity:.2f}",
                          f"bits per byte  {score.bits_per_byte:.4f}"]


def test_score_json_and_stdin(m, lm):
    data = json.loads(run("score", *m, "--json", "--bos", input="Hullo, my name is\n").stdout)
    score = lm.score(lm.tokenizer.encode("Hullo, my name is"), bos=True)
    assert data["tokens"][0] == {"id": 39, "text": "H", "logprob": score.tokens[0].logprob,
                                 "bits": score.tokens[0].bits}
    assert (data["scored_tokens"], data["bytes"], data["windows"]) == (7, 17, 1)
    assert data["perplexity"] == score.perplexity and data["bits_per_byte"] == score.bits_per_byte
    assert data["mean_nll"] == score.mean_nll


def test_score_long_text_says_so_on_stderr(m):
    r = run("score", *m, "--json", "--stride", "32", "word " * 100)
    assert r.exit_code == 0 and json.loads(r.stdout)["windows"] == 3
    assert "101 tokens" in r.stderr and "3 sliding windows" in r.stderr.replace("\n", "")
    assert json.loads(r.stdout)["scored_tokens"] == 100


def test_score_colours_by_surprisal_on_a_terminal(m, monkeypatch):
    from llmx import render

    console = render.Console(force_terminal=True, color_system="truecolor", width=100, file=__import__("io").StringIO())
    monkeypatch.setattr(render, "stdout_console", lambda: console)
    r = run("score", *m, "Hullo, my name is", env={"NO_COLOR": None})
    out = console.file.getvalue()
    assert r.exit_code == 0 and "\x1b[" in out and "surprisal in bits:" in out and "not scored" in out
    plain = run("score", *m, "Hullo, my name is").stdout
    assert "\x1b[" not in plain and "surprisal in bits" not in plain
