"""What a person reads: views in pipes and files, SVG images that show everything, short reprs, long texts."""

from __future__ import annotations

import io
import re

import pytest
from conftest import write_tiny_gpt2

from test_cli import run

TEXT = "Hullo, my name is"


@pytest.fixture(scope="module")
def m(tiny_gpt2):
    return ["-m", str(tiny_gpt2)]


@pytest.fixture(scope="module")
def m12(tmp_path_factory, gpt2_vocab):
    """A GPT-2 with 12 heads a block: more than fit in 80 columns."""
    return ["-m", str(write_tiny_gpt2(tmp_path_factory.mktemp("gpt2-12-heads"), gpt2_vocab, n_head=12, n_embd=96))]


def svg_text(path) -> str:
    """The characters an SVG shows, spaces as spaces."""
    return path.read_text().replace("&#160;", " ")


# --- pipes and files -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [
    ["tokenize", TEXT], ["predict", TEXT], ["score", TEXT], ["heads", "--seq-len", "5"], ["explain", TEXT],
    ["lens", TEXT, "-p", "-1"], ["neighbors", " my"], ["models"]])
def test_piped_views_end_no_line_with_a_space(m, command, tmp_path):
    r = run(*command[:1], *([] if command == ["models"] else m), *command[1:],
            env={"HF_HUB_CACHE": str(tmp_path), "COLUMNS": "80"})
    assert r.exit_code == 0, r.stderr
    assert r.stdout.count("\n") > 2
    assert [line for line in r.stdout.splitlines() if line.endswith(" ")] == []


def test_spaces_inside_lines_and_across_writes_are_kept():
    from llmx.render import LineEndsStripped

    out = io.StringIO()
    stream = LineEndsStripped(out)
    for part in ("a  b   ", "  \nc ", " d  ", "\n"):
        stream.write(part)
    assert out.getvalue() == "a  b\nc  d\n"


def test_stderr_notes_are_one_line_in_a_file(m):
    r = run("predict", *m, "word " * 70, env={"COLUMNS": "40"})
    assert r.exit_code == 0
    assert ("warning: the text has 71 tokens, more than the model's context of 64: predicting from the last 64"
            in r.stderr.splitlines())


# --- counts --------------------------------------------------------------------------------------------------


def test_counts_of_one_are_singular(m):
    from llmx.engine.errors import count
    from llmx.engine.context import fit_and_tell

    assert [count(n, "token") for n in (0, 1, 2)] == ["0 tokens", "1 token", "2 tokens"]
    r = run("predict", *m, "Hi", "--top", "2")
    assert r.stdout.splitlines()[-1] == "after 1 prompt token"
    assert run("tokenize", *m, "Hi").stdout.splitlines()[-1] == "1 token"
    notices = []
    assert fit_and_tell([5, 6, 7], n_ctx=2, on_notice=notices.append, reserve=1) == [7]
    assert notices[0].endswith("keeping its last 1 token"), notices


# --- explain at 80 columns -----------------------------------------------------------------------------------


def test_explain_keeps_its_indents_at_80_columns(m12):
    r = run("explain", *m12, TEXT, env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("1. Your text becomes 7 tokens.\n")
    lines = r.stdout.splitlines()
    assert max(map(len, lines)) <= 80
    outdented = [line for line in lines if line and not line.startswith("   ") and not re.match(r"\d\. ", line)]
    assert outdented == []
    assert "   heads 0–4 of 12 shown; see them all with llmx attention TEXT --layer L" in lines


# --- SVG images ----------------------------------------------------------------------------------------------


def test_attention_svg_has_every_head(m12, tmp_path):
    path = tmp_path / "attention.svg"
    r = run("attention", *m12, TEXT, "--layer", "0", "--svg", str(path), env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.stderr
    assert "H9" not in r.stdout and "heads 0–8 of 12 shown" in r.stdout.replace("\n", " ")  # the terminal: 80
    shown = svg_text(path)
    assert all(f"H{h}" in shown for h in range(12)) and "of 12 shown" not in shown


def test_explain_svg_has_every_head(m12, tmp_path):
    path = tmp_path / "explain.svg"
    assert run("explain", *m12, TEXT, "--svg", str(path), env={"COLUMNS": "80"}).exit_code == 0
    shown = svg_text(path)
    assert re.search(r"head 0 +head 1 .* head 10 +head 11", shown) and "of 12 shown" not in shown


def test_heads_svg_header_whole_and_legend_in_scores(m12, tmp_path):
    path = tmp_path / "heads.svg"
    assert run("heads", *m12, "--seq-len", "5", "--svg", str(path), env={"COLUMNS": "80"}).exit_code == 0
    shown = svg_text(path)
    assert "control: induction" in shown and "…" not in shown
    legend = shown.split("score:")[1]
    assert all(f">{label}<" in legend for label in (" &lt;0.1 ", " 0.1–0.3 ", " 0.5–0.8 ", " ≥0.8 "))
    assert "%" not in legend


def test_lens_svg_has_every_position(m, tmp_path):
    path = tmp_path / "lens.svg"
    words = "Hullo, my name is Bob and I like big tall trees and long walks on the beach"
    assert run("lens", *m, words, "--svg", str(path), env={"COLUMNS": "80"}).exit_code == 0
    shown = svg_text(path)
    assert "shown; use --position" not in shown and re.search(r"position +0 +1 .* 18 +19<", shown)


def test_width_lays_out_stdout_and_svg(m12, tmp_path):
    path = tmp_path / "narrow.svg"
    r = run("attention", *m12, TEXT, "--layer", "0", "--width", "40", "--svg", str(path))
    assert max(map(len, r.stdout.splitlines())) <= 40 and "heads 0–3 of 12 shown" in r.stdout.replace("\n", " ")
    assert "heads 0–3 of 12 shown" in svg_text(path).replace("\n", " ")
    assert run("attention", *m12, TEXT, "--layer", "0", "--width", "5").exit_code == 2


# --- notebooks -----------------------------------------------------------------------------------------------


def test_model_and_weights_reprs_are_short(tiny_gpt2_model):
    model, weights = repr(tiny_gpt2_model), repr(tiny_gpt2_model.weights)
    assert len(model) < 1000 and len(weights) < 1000 and "array" not in model + weights
    assert model.startswith("LanguageModel(name=") and "arch='gpt2'" in model and "n_layer=2" in model
    assert weights.startswith("Weights(embed=float32[50257, 64], pos_embed=float32[64, 64], blocks=(2 blocks like Block(")
    assert "w_qkv=Linear(w=float32[192, 64], b=float32[192])" in weights and weights.endswith("unembed=embed (tied))")


# --- long texts ----------------------------------------------------------------------------------------------


def test_tokenize_view_of_a_long_text_streams_every_row(m):
    from llmx.views.tokens import TOKENS_AT_ONCE

    n = 20 * TOKENS_AT_ONCE + 123  # 200,123 tokens
    r = run("tokenize", *m, input="word" + " word" * (n - 1))
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "[word]" + "[·word]" * (n - 1)
    assert lines[1].split() == ["index", "id", "piece"] and set(lines[2]) == {"─"}
    rows = lines[3:-1]
    assert len(rows) == n and rows[0].split() == ["0", "4775", "word"]
    assert rows[-1].split() == [str(n - 1), "1573", "·word"] and lines[-1] == f"{n} tokens"


WIDE_AND_ODD = "日本語 中文 👍🏽 e\u0301 naïve\tcafé\r\n" * 3  # two-cell, joined and combining characters, controls


@pytest.mark.parametrize("text", ["Hullo, my name is", "", WIDE_AND_ODD, " " * 40 + "end\x00"])
def test_tokenize_table_is_laid_out_as_rich_would(m, text):
    from rich.console import Console

    from llmx.engine import load_tokenizer
    from llmx.views.common import simple_table, visible

    tokenizer = load_tokenizer(m[1])
    ids = tokenizer.encode(text)
    table = simple_table()
    for name, justify in (("index", "right"), ("id", "right"), ("piece", "left")):
        table.add_column(name, justify=justify)
    for i, token_id in enumerate(ids):
        table.add_row(str(i), str(token_id), visible(tokenizer.piece(token_id)))
    console = Console(file=io.StringIO(), width=100)
    console.print(table)
    rich_lines = [line.rstrip() for line in console.file.getvalue().splitlines()]
    assert run("tokenize", *m, "-", input=text + "\n").stdout.splitlines()[1:-1] == rich_lines


def test_heads_table_fits_80_columns_with_whole_headers(m):
    lines = run("heads", *m, "--seq-len", "5", env={"COLUMNS": "80"}).stdout.splitlines()
    header = next(line for line in lines if line.startswith("layer.head"))
    assert header.split() == ["layer.head", "induction", "previous", "duplicate", "│", "control:", "induction",
                              "previous", "duplicate"]
    assert max(map(len, lines)) <= 80 and "…" not in "".join(lines)


# --- --svg on every command ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command, shows", [
    (["tokenize", TEXT], "·name"), (["tokenize", "--decode", "39 724 78"], "Hullo"),
    (["predict", TEXT, "--top", "3"], "after 7 prompt tokens"), (["score", TEXT], "surprisal in bits:"),
    (["models", "show"], "parameters"), (["models"], "short name")])
def test_the_core_commands_save_their_view_as_svg(m, command, shows, tmp_path):
    path = tmp_path / "view.svg"
    args = [*command[:1], *([] if command[0] == "models" else m), *command[1:], "--svg", str(path)]
    r = run(*args, env={"HF_HUB_CACHE": str(tmp_path), "LLMX_MODEL": m[1]})
    assert r.exit_code == 0, r.stderr
    assert r.stdout == run(*args[:-2], env={"HF_HUB_CACHE": str(tmp_path), "LLMX_MODEL": m[1]}).stdout
    assert f"saved {path}" in r.stderr.replace("\n", "")
    svg = svg_text(path)
    assert svg.startswith("<svg") and shows.replace("<", "&lt;") in svg and "fill=\"#" in svg  # coloured


def test_continue_svg_shows_prompt_and_continuation_whatever_stdout_gets(m, tmp_path):
    path = tmp_path / "continue.svg"
    args = ("continue", *m, "Hullo, my name is", "--temperature", "0", "--max-tokens", "4")
    r = run(*args, "--svg", str(path))
    assert r.exit_code == 0 and r.stdout == run(*args).stdout
    continuation = r.stdout.rstrip("\n")
    shown = svg_text(path)
    assert "Hullo, my name is" in shown and "finish reason: length" in shown and continuation.split()[-1] in shown


@pytest.mark.parametrize("args, message", [
    (["tokenize", "--ids", TEXT, "--svg", "x.svg"], "--ids and --svg do not go together"),
    (["predict", "--jsonl", "--svg", "x.svg"], "--svg saves the view of one text"),
])
def test_svg_with_options_that_print_no_view_is_a_usage_error(m, args, message):
    r = run(*args[:1], *m, *args[1:])
    assert r.exit_code == 2 and message in r.stderr


def test_a_huge_tokenize_svg_is_refused_with_a_hint(m, tmp_path):
    from llmx.commands.core import SVG_MAX_TOKENS

    r = run("tokenize", *m, "--svg", str(tmp_path / "t.svg"), input="word" + " word" * SVG_MAX_TOKENS)
    assert r.exit_code == 1 and r.stdout == "" and not (tmp_path / "t.svg").exists()
    assert f"at most {SVG_MAX_TOKENS:,} tokens" in r.stderr and "head -c" in r.stderr
