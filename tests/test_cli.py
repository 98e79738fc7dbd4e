"""Layer 4: the commands through Click's CliRunner, with exact outputs and exit codes."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from click.testing import CliRunner

from llmx.main import cli, main


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


def run(*args: str, input: str | bytes | None = None, env: dict | None = None) -> Result:
    """Run `llmx ARGS` through main(), as the console script does, capturing stdout and stderr apart."""
    runner = CliRunner()
    environment = {"NO_COLOR": "1", "COLUMNS": "100", **(env or {})}
    with runner.isolation(input=input, env=environment) as (out, err, _):
        try:
            main(list(args))
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        return Result(code, out.getvalue().decode(), err.getvalue().decode())


@pytest.fixture(scope="module")
def m(tiny_gpt2):
    return ["-m", str(tiny_gpt2)]


def test_tokenize_view_table_and_count(m):
    r = run("tokenize", *m, "Hullo, my name is")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == (
        "[H][ull][o][,][·my][·name][·is]\n"
        "index     id   piece\n"
        "────────────────────\n"
        "    0     39   H\n"
        "    1    724   ull\n"
        "    2     78   o\n"
        "    3     11   ,\n"
        "    4    616   ·my\n"
        "    5   1438   ·name\n"
        "    6    318   ·is\n"
        "7 tokens\n")


def test_tokenize_ids_count_json_decode_truncate(m):
    assert run("tokenize", *m, "--ids", "Hullo, my name is").stdout == "39 724 78 11 616 1438 318\n"
    assert run("tokenize", *m, "--count", "Hullo, my name is").stdout == "7\n"
    data = json.loads(run("tokenize", *m, "--json", "Hullo, my name is").stdout)
    assert data["count"] == 7 and data["model"] == m[1]
    assert data["tokens"][4] == {"id": 616, "text": " my"}
    assert run("tokenize", *m, "--decode", "39 724 78 11 616 1438 318").stdout == "Hullo, my name is\n"
    assert run("tokenize", *m, "--decode", "[39, 724, 78]").stdout == "Hullo\n"
    assert run("tokenize", *m, "--truncate", "3", "Hullo, my name is").stdout == "Hullo\n"


def test_tokenize_reads_stdin_and_keeps_special_text_as_text(m):
    assert run("tokenize", *m, "--ids", input="Hullo, my name is\n").stdout == "39 724 78 11 616 1438 318\n"
    assert run("tokenize", *m, "--ids", "-", input="Hullo").stdout == "39 724 78\n"
    assert run("tokenize", *m, "--ids", "<|endoftext|>").stdout.split() != ["50256"]
    assert run("tokenize", *m, "--ids", "--special", "<|endoftext|>").stdout == "50256\n"


def test_predict_table_and_json(m):
    r = run("predict", *m, "Hullo, my name is", "--top", "3")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["rank", "id", "token", "prob", "logit"]
    assert [line.split()[0] for line in lines[2:5]] == ["1", "2", "3"]
    assert lines[-1].strip() == "after 7 prompt tokens"
    data = json.loads(run("predict", *m, "Hullo, my name is", "--top", "3", "--json").stdout)
    assert set(data) == {"model", "prompt_tokens", "predictions"} and data["prompt_tokens"] == 7
    first = data["predictions"][0]
    assert set(first) == {"rank", "id", "token", "prob", "logit"} and first["rank"] == 1
    assert isinstance(first["prob"], float) and 0 < first["prob"] < 1
    assert lines[2].split()[1] == str(first["id"])
    probs = [p["prob"] for p in data["predictions"]]
    assert probs == sorted(probs, reverse=True)


def test_continue_is_seeded_and_streams_to_stdout(m):
    a = run("continue", *m, "Hullo, my name is", "--seed", "1", "--max-tokens", "8")
    b = run("continue", *m, "--seed", "1", "--max-tokens", "8", input="Hullo, my name is\n")
    assert a.exit_code == 0 and a.stdout == b.stdout and a.stdout.endswith("\n") and len(a.stdout) > 8
    assert a.stderr == ""
    echoed = run("continue", *m, "Hullo, my name is", "--seed", "1", "--max-tokens", "8", "--echo")
    assert echoed.stdout == "Hullo, my name is" + a.stdout


def test_continue_json(m):
    data = json.loads(run("continue", *m, "Hullo", "--temperature", "0", "--max-tokens", "5", "--json").stdout)
    assert set(data) == {"model", "text", "ids", "finish_reason"}
    assert len(data["ids"]) == 5 and data["finish_reason"] == "length"
    text = run("continue", *m, "Hullo", "--temperature", "0", "--max-tokens", "5").stdout
    assert text == data["text"] + "\n"
    decoded = run("tokenize", *m, "--decode", " ".join(map(str, data["ids"]))).stdout
    assert decoded == data["text"] + "\n"


def test_continue_warns_on_stderr_when_the_prompt_is_cut(m):
    r = run("continue", *m, "word " * 80, "--max-tokens", "5", "--seed", "0")
    assert r.exit_code == 0 and "keeping its last 59 tokens" in r.stderr.replace("\n", " ")


def test_stop_sequence_with_escapes(m):
    free = json.loads(run("continue", *m, "Hullo", "--temperature", "0", "--max-tokens", "12", "--json").stdout)["text"]
    stop = free[3:6]
    data = json.loads(run("continue", *m, "Hullo", "--temperature", "0", "--max-tokens", "12", "--json",
                          "--stop", stop).stdout)
    assert data["text"] == free[:free.index(stop)] and data["finish_reason"] == "stop"


@pytest.mark.parametrize("args, message", [
    (["predict", "x", "--top", "0"], "'--top'"),
    (["continue", "x", "--temperature", "-1"], "'--temperature'"),
    (["continue", "x", "--top-p", "0"], "'--top-p'"),
    (["continue", "x", "--top-p", "1.5"], "'--top-p'"),
    (["predict", "x", "--nope"], "--nope"),
])
def test_usage_errors_exit_2_with_one_line(m, args, message):
    r = run(*args[:1], *m, *args[1:])
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("Error: ") and message in r.stderr


@pytest.mark.parametrize("args, input, message", [
    (["tokenize", "--decode", "1 99999"], None, "token id 99999 is outside"),
    (["tokenize", "--decode", "one two"], None, "integers"),
    (["predict"], b"\xff\xfeabc", "not valid UTF-8"),
])
def test_runtime_errors_exit_1_with_one_line(m, args, input, message):
    r = run(*args[:1], *m, *args[1:], input=input)
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and message in r.stderr


def test_bad_model_paths_are_one_line_errors(tmp_path):
    r = run("predict", "-m", str(tmp_path / "missing"), "x")
    assert r.exit_code == 1 and "no such file or directory" in r.stderr and r.stderr.count("\n") == 1
    r = run("predict", "-m", str(tmp_path), "x")
    assert r.exit_code == 1 and "has no config.json" in r.stderr
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    r = run("predict", "-m", str(tmp_path), "x")
    assert r.exit_code == 1 and "model_type 'bert' is not supported" in r.stderr


def test_truncated_and_corrupt_safetensors(tiny_gpt2, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_gpt2, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    r = run("predict", "-m", str(broken), "x")
    assert r.exit_code == 1 and "truncated" in r.stderr and r.stderr.count("\n") == 1
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    r = run("predict", "-m", str(broken), "x")
    assert r.exit_code == 1 and "safetensors" in r.stderr and r.stderr.count("\n") == 1


def test_no_text_on_a_terminal_shows_usage_instead_of_waiting(m, monkeypatch):
    import sys

    runner = CliRunner()
    with runner.isolation(env={"NO_COLOR": "1"}) as (out, err, _):
        monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
        with pytest.raises(SystemExit) as exit_info:
            main(["predict", *m])
    assert exit_info.value.code == 2 and "no text given" in err.getvalue().decode()


def test_version_comes_from_package_metadata():
    from importlib.metadata import version

    assert run("--version").stdout == f"llmx {version('llmx')}\n"


def test_every_command_help_has_an_example():
    def commands(group, path):
        for name, command in group.commands.items():
            yield f"{path} {name}", command
            if hasattr(command, "commands"):
                yield from commands(command, f"{path} {name}")

    for path, command in commands(cli, "llmx"):
        r = run(*path.split()[1:], "--help")
        assert r.exit_code == 0 and "Example" in r.stdout and path in r.stdout, path


def test_ctrl_c_exits_130_without_a_traceback(m, monkeypatch):
    import llmx.engine.lm

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(llmx.engine.lm.LanguageModel, "generate", interrupted)
    r = run("continue", *m, "Hullo")
    assert r.exit_code == 130 and "Traceback" not in r.stderr and r.stderr.strip().endswith("interrupted")


def command_paths(group=cli, path=()):
    """("tokenize",), ("models", "show"), ...: every command of the CLI."""
    for name, command in group.commands.items():
        yield (*path, name)
        if hasattr(command, "commands"):
            yield from command_paths(command, (*path, name))


READER_GONE_ARGS = {  # arguments that make each command print something
    ("tokenize",): ["Hullo"], ("predict",): ["Hullo"], ("continue",): ["Hullo", "--max-tokens", "5"],
    ("score",): ["--jsonl", "--lines"], ("models",): [], ("models", "show"): [], ("explain",): ["Hullo"],
    ("lens",): ["Hullo"], ("attention",): ["Hullo", "--layer", "0"], ("heads",): ["--seq-len", "4"],
    ("neighbors",): [" Paris"], ("steer",): ["Hi", "--add", " Love", "--sub", " Hate", "--layer", "0"],
    ("attribute",): ["Hullo", "--target", " Paris"], ("patch",): ["Hi", "Ha", "--target", " Paris", "--foil", " Rome"],
    ("finetune",): ["--help"], ("finetune", "merge"): ["--help"],  # they write files; stdout has only their help
    ("sae",): ["--help"], ("sae", "train"): ["--help"],
    ("features",): ["--help"], ("feature",): ["--help"],  # they need an SAE: test_sae_cli.py runs them on one
}


def test_reader_gone_covers_every_command():
    assert sorted(READER_GONE_ARGS) == sorted(command_paths())


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["tokenize", "--help"], ["continue", "--json", "Hullo"]]
                         + [[*path, *extra] for path, extra in READER_GONE_ARGS.items()], ids=" ".join)
def test_a_reader_that_went_away_ends_every_command_quietly_with_status_0(tiny_gpt2, args):
    """Like `llmx ... | head -0`: the pipe's reader is gone before the first write (Rich, click or our own)."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        r = subprocess.run([sys.executable, "-m", "llmx", *args], stdout=write_end, stderr=subprocess.PIPE,
                           input=b"Hullo there\n", timeout=120,
                           env={**os.environ, "LLMX_MODEL": str(tiny_gpt2), "NO_COLOR": "1"})
    finally:
        os.close(write_end)
    assert (r.returncode, r.stderr.decode()) == (0, "")


def test_tokenize_reads_no_weights(tiny_gpt2, tmp_path):
    import shutil

    no_weights = shutil.copytree(tiny_gpt2, tmp_path / "no-weights")
    (no_weights / "model.safetensors").write_bytes(b"not read by tokenize")
    assert run("tokenize", "-m", str(no_weights), "--ids", "Hullo").stdout == "39 724 78\n"
    assert run("predict", "-m", str(no_weights), "Hullo").exit_code == 1


def test_stop_sequences_understand_escapes_and_keep_other_characters():
    from llmx.commands.core import unescape

    assert unescape(r"\n") == "\n" and unescape(r"A:\t") == "A:\t" and unescape("\\\\n") == "\\n"
    assert unescape("é\\n") == "é\n" and unescape("naïve") == "naïve" and unescape(r"\x") == r"\x"
