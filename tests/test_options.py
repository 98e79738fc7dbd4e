"""Options: values refused as usage errors (exit 2), option combinations that are refused instead of
ignored, --echo, and where the model comes from (-m before or after the command, LLMX_MODEL)."""

from __future__ import annotations

import json

import pytest
from test_cli import run


@pytest.fixture(scope="module")
def m(tiny_gpt2):
    return ["-m", str(tiny_gpt2)]


STEER = ["steer", "Hi", "--add", " Love", "--sub", " Hate", "--layer", "0", "--max-tokens", "2"]


@pytest.mark.parametrize("args, option", [
    (["continue", "Hi", "--seed", "-1"], "'--seed'"),
    (["continue", "Hi", "--seed", str(2**32)], "'--seed'"),
    (["continue", "Hi", "--temperature", "nan"], "'--temperature'"),
    (["continue", "Hi", "--temperature", "inf"], "'--temperature'"),
    (["continue", "Hi", "--temperature", "1e-320"], "'--temperature'"),
    (["continue", "Hi", "--temperature", "-1"], "'--temperature'"),
    (["continue", "Hi", "--top-p", "nan"], "'--top-p'"),
    (["heads", "--seed", "-1"], "'--seed'"),
    ([*STEER, "--seed", "-1"], "'--seed'"),
    ([*STEER, "--temperature", "nan"], "'--temperature'"),
    ([*STEER, "--coef", "nan"], "'--coef'"),
])
def test_out_of_range_values_are_usage_errors(m, args, option):
    r = run(args[0], *m, *args[1:])
    assert r.exit_code == 2 and r.stdout == "" and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("Error: Invalid value for") and option in r.stderr
    if "temperature" in option and "-1" not in args:
        assert "give 0 (always the most likely token) or a finite number from 1e-06 up" in r.stderr


def test_the_edges_of_the_ranges_are_accepted(m):
    for args in (["--seed", "0"], ["--seed", str(2**32 - 1)], ["--temperature", "1e-6"], ["--temperature", "0"]):
        r = run("continue", *m, "Hi", "--max-tokens", "2", *args)
        assert r.exit_code == 0, (args, r.stderr)


@pytest.mark.parametrize("temperature", [float("nan"), float("inf"), 1e-320, -1.0])
def test_the_engine_refuses_the_same_temperatures(temperature):
    from llmx.engine import Sampling
    from llmx.engine.errors import InputError

    with pytest.raises(InputError, match="0 .greedy. or a finite number from 1e-06 up"):
        Sampling(temperature=temperature)


def test_decode_takes_ids_as_one_argument_or_several_and_honours_truncate(m):
    assert run("tokenize", *m, "--decode", "39", "724", "78").stdout == "Hullo\n"
    assert run("tokenize", *m, "--decode", "39 724 78", "11").stdout == "Hullo,\n"
    assert run("tokenize", *m, "--decode", "--truncate", "2", "39 724 78").stdout == "Hull\n"
    data = json.loads(run("tokenize", *m, "--decode", "--truncate", "2", "--json", "39", "724", "78").stdout)
    assert (data["ids"], data["text"]) == ([39, 724], "Hull")


@pytest.mark.parametrize("args, message", [
    (["Hullo", "there"], "TEXT is one argument: quote it"),
    (["--ids", "--count", "Hullo"], "--ids and --count do not go together"),
    (["--ids", "--json", "Hullo"], "--ids and --json do not go together"),
    (["--count", "--truncate", "2", "Hullo"], "--count and --truncate do not go together"),
    (["--ids", "--decode", "39"], "--ids and --decode do not go together"),
    (["--decode", "--special", "39"], "--special is about reading TEXT"),
])
def test_tokenize_options_that_would_be_ignored_are_refused(m, args, message):
    r = run("tokenize", *m, *args)
    assert r.exit_code == 2 and r.stdout == "" and message in r.stderr and r.stderr.count("\n") == 1


def test_continue_echo_with_json_and_with_context(m, tmp_path):
    args = ["--seed", "1", "--max-tokens", "5"]
    plain = json.loads(run("continue", *m, "Hullo", *args, "--json").stdout)
    echoed = json.loads(run("continue", *m, "Hullo", *args, "--json", "--echo").stdout)
    assert echoed == {**plain, "prompt": "Hullo"}
    notes = tmp_path / "notes.txt"
    notes.write_text("Mt. Everest is 8,849 m high.\n")
    with_context = ["--context", str(notes), "How high is it?", *args]
    alone = run("continue", *m, *with_context).stdout
    r = run("continue", *m, *with_context, "--echo")
    assert r.exit_code == 0 and r.stdout == "Mt. Everest is 8,849 m high.\n\nHow high is it?" + alone
    data = json.loads(run("continue", *m, *with_context, "--echo", "--json").stdout)
    assert data["prompt"] == "Mt. Everest is 8,849 m high.\n\nHow high is it?"
    batch = run("continue", *m, "--jsonl", "--lines", "--echo", "--context", str(notes), *args, input="Q?\n")
    assert json.loads(batch.stdout)["prompt"] == "Mt. Everest is 8,849 m high.\n\nQ?"


def test_the_model_can_come_before_the_command(m, tiny_gpt2):
    missing = {"LLMX_MODEL": "/no/such/model"}
    assert run(*m, "tokenize", "--ids", "Hullo", env=missing).stdout == "39 724 78\n"  # -m beats LLMX_MODEL
    assert run("-m", "/no/such/model", "tokenize", *m, "--ids", "Hullo").stdout == "39 724 78\n"  # its own -m wins
    r = run("tokenize", "--ids", "Hullo", env=missing)
    assert r.exit_code == 1 and "/no/such/model" in r.stderr  # LLMX_MODEL without any -m
    r = run(*m, "predict", "--json", "Hullo")
    assert r.exit_code == 0 and json.loads(r.stdout)["model"] == str(tiny_gpt2)


def test_models_show_without_an_argument_uses_llmx_model_or_the_group_option(m, tiny_gpt2):
    named = json.loads(run("models", "show", str(tiny_gpt2), "--json").stdout)
    from_env = run("models", "show", "--json", env={"LLMX_MODEL": str(tiny_gpt2)})
    assert from_env.exit_code == 0 and json.loads(from_env.stdout) == named
    assert json.loads(run(*m, "models", "show", "--json").stdout) == named


def test_models_show_adapter_adds_the_adapters_facts(tiny_gpt2, tmp_path):
    from test_finetune import random_adapter

    from llmx.engine import load

    random_adapter(load(str(tiny_gpt2)), tmp_path / "adapter")  # rank 4 on the attention and MLP of 2 blocks
    named = json.loads(run("models", "show", str(tiny_gpt2), "--json").stdout)
    r = run("models", "show", str(tiny_gpt2), "--adapter", str(tmp_path / "adapter"), "--json")
    assert r.exit_code == 0, r.stderr
    shown = json.loads(r.stdout)
    assert {key: shown[key] for key in named} == named
    assert {key: value for key, value in shown.items() if key not in named} == {
        "adapter": str(tmp_path / "adapter"), "adapter_base": str(tiny_gpt2), "adapter_rank": 4, "adapter_alpha": 8.0,
        "adapter_targets": "c_attn, c_fc, c_proj",
        # per block: c_attn 4*(64+192), attn c_proj 4*(64+64), c_fc 4*(64+256), mlp c_proj 4*(256+64)
        "adapter_parameters": 2 * 4 * ((64 + 192) + (64 + 64) + (64 + 256) + (256 + 64))}
    r = run("models", "show", str(tiny_gpt2), "--adapter", str(tmp_path))
    assert r.exit_code == 1 and "has no adapter_config.json" in r.stderr


@pytest.mark.parametrize("args, expected", [
    (["--data", "a", "b", "--steps", "3", "--data", "c"], ["--data", "a", "--data", "b", "--steps", "3", "--data", "c"]),
    (["-m", "x", "--data", "a"], ["-m", "x", "--data", "a"]),
    (["merge", "-m", "x", "--out", "o"], ["merge", "-m", "x", "--out", "o"]),
    (["--out", "o", "--data", "a", "b"], ["--out", "o", "--data", "a", "--data", "b"]),
])
def test_several_values_follow_one_option(args, expected):
    from llmx.options import spread_values
    assert spread_values(args, ("--data",)) == expected
