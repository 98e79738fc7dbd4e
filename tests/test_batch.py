"""Batch mode (--jsonl) of score, predict and continue, and continue --context."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
from conftest import write_tiny_gpt2
from test_cli import run


@pytest.fixture(scope="module")
def m(tiny_gpt2):
    return ["-m", str(tiny_gpt2)]


def jsonl(*objects) -> str:
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objects)


def results(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_score_jsonl_keeps_order_and_passes_other_fields_through(m):
    r = run("score", *m, "--jsonl", input=jsonl({"id": "a", "text": "Hullo, my name is", "tags": [1, 2]},
                                                  {"text": "The capital of France is Paris.", "id": "b"}))
    assert r.exit_code == 0 and r.stderr == ""
    a, b = results(r.stdout)
    assert (a["id"], a["tags"], b["id"]) == ("a", [1, 2], "b")
    assert "text" not in a and list(a)[:2] == ["id", "tags"]
    single = json.loads(run("score", *m, "--json", "Hullo, my name is").stdout)
    assert a == {"id": "a", "tags": [1, 2], **single, "line": 1, "error": None}
    assert b["scored_tokens"] == 6  # 7 tokens, the first not scored


def test_a_bad_line_becomes_an_error_object_and_the_rest_go_on(m, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(jsonl({"id": 1, "text": "Hullo there"}, "not json", {"id": 3}, [4], {"id": 5, "text": "Hi"},
                            "", {"id": 7, "text": "Hullo again"}))
    r = run("score", *m, "--jsonl", str(source))
    assert r.exit_code == 1
    assert r.stderr == ('Error: 4 of 6 input lines failed: their results have "error": "..." '
                        '(the others have "error": null)\n')
    out = results(r.stdout)  # the blank line 6 is skipped, but counted
    assert len(out) == 6 and [o.get("id") for o in out] == [1, None, 3, None, 5, 7]
    assert [o["line"] for o in out] == [1, 2, 3, 4, 5, 7]
    assert [o["error"] is None for o in out] == [True, False, False, False, False, True]
    assert "not valid JSON" in out[1]["error"] and set(out[1]) == {"line", "error"}
    assert out[2] == {"id": 3, "line": 3,
                      "error": 'the object has no "text" field: it has \'id\' (give {"text": "..."})'}
    assert "not an object" in out[3]["error"]
    assert "1 token" in out[4]["error"] and "--bos" in out[4]["error"]  # a text the engine refuses
    assert out[0]["scored_tokens"] == out[5]["scored_tokens"] == 3  # H ull o there, H ull o again


def test_predict_and_continue_jsonl_match_their_single_runs(m):
    lines = "Hullo, my name is\nThe capital of France is\n"
    r = run("predict", *m, "--jsonl", "--lines", "--top", "2", input=lines)
    assert r.exit_code == 0
    assert results(r.stdout) == [{**json.loads(run("predict", *m, "--top", "2", "--json", t).stdout),
                                  "line": n, "error": None} for n, t in enumerate(lines.splitlines(), 1)]
    r = run("continue", *m, "--jsonl", "-", "--seed", "1", "--max-tokens", "6", input=jsonl(
        {"text": "Hullo, my name is", "n": 1}, {"text": "The capital of France is", "n": 2}))
    assert r.exit_code == 0
    expected = [json.loads(run("continue", *m, "--seed", "1", "--max-tokens", "6", "--json", t).stdout)
                for t in lines.splitlines()]
    assert results(r.stdout) == [{"n": 1, **expected[0], "line": 1, "error": None},
                                 {"n": 2, **expected[1], "line": 2, "error": None}]


def test_batch_usage_errors(m):
    r = run("score", *m, "--lines", "x")
    assert r.exit_code == 2 and "--lines goes with --jsonl" in r.stderr
    r = run("predict", *m, "--jsonl", "-", "x")
    assert r.exit_code == 2 and "drop the TEXT argument" in r.stderr
    r = run("continue", *m, "--jsonl", "--context", "-", input="{}\n")
    assert r.exit_code == 2 and "--context -" in r.stderr
    r = run("predict", *m, "--jsonl", "/no/such/file.jsonl")
    assert r.exit_code == 1 and "cannot read /no/such/file.jsonl" in r.stderr


def test_continue_with_context_cuts_the_context_never_the_question(m, tiny_gpt2):
    from llmx.engine import load, with_context

    tokenizer = load(str(tiny_gpt2)).tokenizer
    context = " ".join(str(i) for i in range(100))  # 100 tokens
    question = "Q: What number comes after 99?\nA:"
    tail = tokenizer.encode("\n\n" + question)
    r = run("continue", *m, "--context", "-", question, "--max-tokens", "10", "--temperature", "0", "--json", input=context)
    assert r.exit_code == 0
    dropped = 100 - (64 - 10 - len(tail))
    assert f"dropped the first {dropped} tokens of the context" in r.stderr.replace("\n", " ")
    prompt = with_context(tokenizer, context, question, 64 - 10)
    assert prompt.ids[-len(tail):] == tail and len(prompt.ids) == 54 and prompt.dropped == dropped
    assert tokenizer.decode(prompt.ids).endswith(" 98 99\n\n" + question)
    alone = run("continue", *m, "--max-tokens", "10", "--temperature", "0", "--json", tokenizer.decode(prompt.ids))
    assert json.loads(r.stdout)["ids"] == json.loads(alone.stdout)["ids"]


def test_context_that_fits_is_kept_whole(m, tmp_path, tiny_gpt2):
    notes = tmp_path / "notes.txt"
    notes.write_text("Mt. Everest is 8,849 m high.\n")
    r = run("continue", *m, "--context", str(notes), "How high is it?", "--max-tokens", "3", "--seed", "2", "--json")
    same = run("continue", *m, "Mt. Everest is 8,849 m high.\n\nHow high is it?", "--max-tokens", "3", "--seed", "2", "--json")
    assert r.exit_code == 0 and r.stderr == "" and r.stdout == same.stdout


def status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_10000_lines_stream_with_flat_memory(tmp_path, gpt2_vocab):
    """Lines go in through a pipe that stays open; results must come out line by line (no reading all of stdin)
    and the process's memory when the 10,000th result is out must be what it was at the 1,000th."""
    micro = write_tiny_gpt2(tmp_path / "micro", gpt2_vocab, n_embd=8, n_head=2, n_layer=1)
    child = subprocess.Popen([sys.executable, "-m", "llmx", "predict", "-m", str(micro), "--top", "1", "--jsonl"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sampled = threading.Event()
    meta = "x" * 300  # a pass-through field, so that keeping lines or results around would show

    def feed():
        for i in range(10_000):
            child.stdin.write((json.dumps({"id": i, "meta": meta, "text": f"Line {i} of the list"}) + "\n").encode())
        child.stdin.flush()
        sampled.wait(timeout=600)
        child.stdin.close()  # end of input only after the last sample: the child cannot have read to EOF first

    threading.Thread(target=feed, daemon=True).start()
    timer = threading.Timer(300, child.kill)  # a reader that waits for EOF would hang here: fail instead
    timer.start()
    memory = {}
    try:
        for n in range(1, 10_001):
            line = child.stdout.readline()
            assert line, f"no result for line {n}: {child.stderr.read().decode()}"
            assert json.loads(line)["id"] == n - 1
            if n in (1_000, 10_000):
                memory[n] = status_kb(child.pid, "VmRSS"), status_kb(child.pid, "VmHWM")  # now, peak
    finally:
        sampled.set()
        timer.cancel()
    assert child.wait(timeout=60) == 0
    (rss_1k, peak_1k), (rss_10k, peak_10k) = memory[1_000], memory[10_000]
    print(f"RSS at 1,000 lines {rss_1k} KB, at 10,000 {rss_10k} KB; peak {peak_1k} KB, {peak_10k} KB")
    assert rss_10k - rss_1k < 2048 and peak_10k - peak_1k < 2048


def strict_json(line: str):
    """json.loads that refuses NaN and Infinity, as jq and most other parsers do."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(line, parse_constant=refuse)


def test_no_line_is_lost_to_numbers_nesting_surrogates_or_blanks(m):
    deep = "[" * 100_000 + "]" * 100_000
    r = run("predict", *m, "--top", "1", "--jsonl", input=jsonl(
        '{"id": 1, "text": "Hullo", "n": ' + "9" * 5000 + "}",
        {"id": 2, "text": "Hullo"},
        '{"id": 3, "text": "Hullo", "deep": ' + deep + "}",
        '{"id": 4, "text": "\\ud800 lone"}',
        "   \t",
        {"id": 6, "text": 42},
        {"id": 7, "text": None},
        {"id": 8, "text": ["a"]},
        deep,
        {"id": 10, "text": "Hullo"}))
    assert r.exit_code == 1 and "7 of 9 input lines failed" in r.stderr
    out = [strict_json(line) for line in r.stdout.splitlines()]
    assert [o["line"] for o in out] == [1, 2, 3, 4, 6, 7, 8, 9, 10]  # the blank line 5 is skipped
    assert [o["error"] is None for o in out] == [False, True, False, False, False, False, False, False, True]
    assert "4300 digits" in out[0]["error"] and "as a string" in out[0]["error"]
    assert "nested too deep" in out[2]["error"] and "nested too deep" in out[7]["error"]
    assert "lone surrogate (\\ud800 at character 0)" in out[3]["error"]
    assert [o["error"].split(":")[0] for o in out[4:7]] == [
        'the "text" field is a number, not a string', 'the "text" field is null, not a string',
        'the "text" field is an array, not a string']
    assert out[1]["predictions"] == out[8]["predictions"] and out[8]["id"] == 10


def test_blank_lines_are_texts_with_lines(m):
    r = run("predict", *m, "--top", "1", "--jsonl", "--lines", input="Hullo\n\nthere\n")
    assert r.exit_code == 0 and [o["line"] for o in results(r.stdout)] == [1, 2, 3]


def test_output_is_valid_json_with_nan_infinity_and_lone_surrogates_passed_through(m):
    r = run("predict", *m, "--top", "1", "--jsonl", input=jsonl(
        '{"text": "Hullo", "x": NaN, "y": [1, -Infinity], "z": 1e999, "s": "\\udc00 and \\ud83d\\ude00"}'))
    assert r.exit_code == 0
    (line,) = r.stdout.splitlines()
    out = strict_json(line)
    assert (out["x"], out["y"], out["z"]) == (None, [1, None], None) and out["error"] is None
    assert out["s"] == "\udc00 and 😀" and '"\\udc00 and 😀"' in line  # written back as it came in
    for path in (".x", ".y[1]", ".z"):
        assert f"line 1: {path} is not a finite number, which JSON cannot hold: written as null" in r.stderr


def test_a_non_finite_result_becomes_null_with_a_warning(m, monkeypatch):
    import llmx.commands.score

    degenerate = lambda result: {"perplexity": float("inf"), "mean_nll": float("nan")}
    monkeypatch.setattr(llmx.commands.score, "scores_data", degenerate)
    r = run("score", *m, "--json", "Hullo there")
    assert r.exit_code == 0 and strict_json(r.stdout) == {"model": m[1], "perplexity": None, "mean_nll": None}
    assert ".perplexity is not a finite number" in r.stderr and ".mean_nll is not" in r.stderr
    r = run("score", *m, "--jsonl", "--lines", input="Hullo there\n")
    assert r.exit_code == 0 and strict_json(r.stdout)["perplexity"] is None
    assert "line 1: .perplexity is not a finite number" in r.stderr


def test_input_fields_named_error_or_line_cannot_make_a_success_look_like_a_failure(m):
    r = run("predict", *m, "--top", "1", "--jsonl", input=jsonl(
        {"text": "Hullo", "error": "from the input", "line": 99, "model": "mine", "keep": 1},
        {"text": "Hullo", "error": "again"}))
    assert r.exit_code == 0
    first, second = results(r.stdout)
    assert (first["error"], first["line"], first["model"], first["keep"]) == (None, 1, m[1], 1)
    assert (second["error"], second["line"]) == (None, 2)
    assert [line.split(": ")[1] for line in r.stderr.splitlines() if line.startswith("warning")] == [
        "line 1", "line 1", "line 1"]  # once per field name: error, line, model
    assert "the input field 'error' is replaced by llmx's own" in r.stderr.replace("\n", " ")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pipe sizes and signals as on Linux")
def test_sigterm_finishes_the_line_being_written_into_a_slow_pipe_then_exits_143(m, tmp_path):
    import signal

    source = tmp_path / "big.jsonl"
    big = "x" * 1_000_000  # a result line 15 times the size of a pipe's buffer
    source.write_text(jsonl(*({"id": i, "meta": big, "text": "Hullo there"} for i in range(3))))
    child = subprocess.Popen([sys.executable, "-m", "llmx", "predict", *m, "--top", "1", "--jsonl", str(source)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = child.stdout.read(1000)  # the child is now blocked in the middle of writing line 1
    child.send_signal(signal.SIGTERM)
    out = first + child.stdout.read()
    assert child.wait(timeout=60) == 143, child.stderr.read().decode()
    assert out.endswith(b"\n") and out.count(b"\n") == 1 and json.loads(out)["meta"] == big


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals as on Linux")
def test_sigterm_between_lines_exits_143_at_once(m):
    import signal

    child = subprocess.Popen([sys.executable, "-m", "llmx", "predict", *m, "--top", "1", "--jsonl", "--lines"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdin.write(b"Hullo\n")
    child.stdin.flush()
    first = child.stdout.readline()  # the child now waits for line 2
    child.send_signal(signal.SIGTERM)
    rest = child.stdout.read()
    assert child.wait(timeout=60) == 143 and json.loads(first)["line"] == 1 and rest == b""
    child.stdin.close()


MIXED = jsonl({"id": 1, "text": "Hullo, my name is"}, "not json", {"id": 3, "text": "The capital of France is"}, "",
              {"id": 5, "text": "a"}, {"id": 6}, {"id": 7, "text": "One two three four five six seven eight nine"},
              {"id": 8, "text": "Hullo, my name is"}, {"id": 9, "text": "x"})


@pytest.mark.parametrize("command", [["continue", "--seed", "3", "--max-tokens", "9", "--stop", "e"],
                                     ["continue", "--temperature", "0", "--max-tokens", "60", "--echo"],
                                     ["predict", "--top", "2"], ["score", "--bos"]],
                         ids=["continue-sampled", "continue-greedy-past-the-window", "predict", "score"])
def test_jsonl_output_is_the_same_for_any_batch_size(m, command):
    """Micro-batches of 1 and 7 (continue: rows generated together, finishing at different times, sliding
    their windows) give byte-identical output, with the failing lines failing alone; the same notices on stderr."""
    one = run(*command, *m, "--jsonl", "--batch-size", "1", input=MIXED)
    seven = run(*command, *m, "--jsonl", "--batch-size", "7", input=MIXED)
    default = run(*command, *m, "--jsonl", input=MIXED)
    assert one.exit_code == seven.exit_code == default.exit_code == 1
    assert one.stdout == seven.stdout == default.stdout
    assert sorted(one.stderr.splitlines()) == sorted(seven.stderr.splitlines())  # rows of a batch notice in turn
    out = results(one.stdout)
    assert [o["line"] for o in out] == [1, 2, 3, 5, 6, 7, 8, 9]
    assert [o["error"] is None for o in out] == [True, False, True, True, False, True, True, True]
    if command[0] == "continue":
        assert len({len(o["ids"]) for o in out if o["error"] is None}) > 1 or command[1] == "--temperature"
        single = json.loads(run(*command, *m, "--json", "The capital of France is").stdout)
        assert out[2] == {"id": 3, **single, "line": 3, "error": None}


def test_continue_n_samples_are_single_runs_with_seeds_s_to_s_plus_n_minus_1(m):
    r = run("continue", *m, "Hullo, my name is", "-n", "3", "--seed", "5", "--max-tokens", "6", "--json")
    assert r.exit_code == 0 and r.stderr == ""
    samples = json.loads(r.stdout)
    singles = [json.loads(run("continue", *m, "Hullo, my name is", "--seed", str(s), "--max-tokens", "6",
                              "--json").stdout) for s in (5, 6, 7)]
    assert samples == [{**single, "seed": s} for single, s in zip(singles, (5, 6, 7))]
    assert len({tuple(s["ids"]) for s in samples}) == 3
    in_twos = run("continue", *m, "Hullo, my name is", "-n", "3", "--seed", "5", "--max-tokens", "6", "--json",
                  "--batch-size", "2")
    assert in_twos.stdout == r.stdout
    plain = run("continue", *m, "Hullo, my name is", "-n", "3", "--seed", "5", "--max-tokens", "6", "--echo")
    assert plain.stdout == "".join(f"--- sample {i} of 3, seed {4 + i} ---\nHullo, my name is{s['text']}\n"
                                   for i, s in enumerate(samples, 1))
    wrapped = json.loads(run("continue", *m, "Hi", "-n", "2", "--seed", str(2**32 - 1), "--max-tokens", "2",
                             "--json").stdout)
    assert [s["seed"] for s in wrapped] == [2**32 - 1, 0]
    unseeded = json.loads(run("continue", *m, "Hi", "-n", "2", "--max-tokens", "3", "--json").stdout)
    again = json.loads(run("continue", *m, "Hi", "--seed", str(unseeded[1]["seed"]), "--max-tokens", "3",
                           "--json").stdout)
    assert (unseeded[1]["seed"] - unseeded[0]["seed"]) % 2**32 == 1 and again["ids"] == unseeded[1]["ids"]


def test_n_and_batch_size_usage_errors(m):
    r = run("continue", *m, "--jsonl", "-n", "2", input="{}\n")
    assert r.exit_code == 2 and "-n samples one TEXT: drop --jsonl" in r.stderr
    r = run("continue", *m, "x", "-n", "2", "--svg", "x.svg")
    assert r.exit_code == 2 and "drop --svg" in r.stderr
    for command in ("continue", "predict", "score"):
        r = run(command, *m, "Hullo", "--batch-size", "2")
        assert r.exit_code == 2 and "--batch-size goes with --jsonl" in r.stderr
    r = run("score", *m, "--jsonl", "--batch-size", "0", input="{}\n")
    assert r.exit_code == 2


def test_a_batch_never_waits_for_lines_that_have_not_arrived(m):
    """A writer that sends the next line only after it has read the last result (a chat loop, a coprocess) gets
    each result at once, although a micro-batch could hold 16 lines."""
    child = subprocess.Popen([sys.executable, "-m", "llmx", "continue", *m, "--jsonl", "--lines", "--seed", "1",
                              "--max-tokens", "3", "--batch-size", "16"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    timer = threading.Timer(120, child.kill)  # a reader that waits for a whole batch would hang: fail instead
    timer.start()
    try:
        for n in (1, 2, 3):
            child.stdin.write(f"Line {n}\n".encode())
            child.stdin.flush()
            line = child.stdout.readline()
            assert line and json.loads(line)["line"] == n, child.stderr.read().decode()
        child.stdin.write(b"Line 4, the last, without a line end")
        child.stdin.close()
        assert json.loads(child.stdout.readline())["line"] == 4
        assert child.wait(timeout=60) == 0
    finally:
        timer.cancel()
