"""The inspect commands through main(): exact plain output, JSON schemas, --svg, fitting the width, exit codes."""

from __future__ import annotations

import json

import pytest

from test_cli import run

TEXT = "Hullo, my name is"


@pytest.fixture(scope="module")
def m(tiny_gpt2):
    return ["-m", str(tiny_gpt2)]


def json_of(*args, env=None):
    r = run(*args, "--json", env=env)
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


def test_attention_one_head_exact_plain_output(m):
    r = run("attention", *m, "Hullo, my", "--layer", "0", "--head", "1")
    assert r.exit_code == 0 and r.stderr == ""
    assert r.stdout == (
        "Block 0, head 1: how much each token (row) reads from each earlier token (column), in percent; each\n"
        "row adds up to 100%.\n"
        "\n"
        "        0  1  2  3  4\n"
        "0 H   100\n"
        "1 ull  50 50\n"
        "2 o    33 33 34\n"
        "3 ,    25 25 25 25\n"
        "4 ·my  20 20 20 21 20\n"
        "\n"
        "blank: a token cannot read later tokens\n")


def test_attention_json_rows_sum_to_one_and_are_causal(m):
    data = json_of("attention", *m, TEXT, "--layer", "1")
    assert set(data) == {"model", "ids", "tokens", "layer", "heads", "pattern"}
    assert data["heads"] == [0, 1, 2, 3] and data["tokens"][4] == " my" and data["layer"] == 1
    for head in data["pattern"]:
        for dest, row in enumerate(head):
            assert sum(row) == pytest.approx(1, abs=1e-5) and not any(row[dest + 1:])


def test_attention_all_heads_view(m):
    r = run("attention", *m, TEXT, "--layer", "1")
    lines = r.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["H0"])
    assert lines[header].split() == ["H0", "H1", "H2", "H3"] and lines[header + 1].split()[:3] == ["0", "H", "→0"]
    narrow = run("attention", *m, TEXT, "--layer", "1", env={"COLUMNS": "30"})
    assert "heads 0–1 of 4 shown; use --head H or a wider terminal" in narrow.stdout.replace("\n", " ")
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 30


def test_lens_grid_fits_the_width_and_says_what_is_left_out(m):
    r = run("lens", *m, "Hullo, my name is Bob and I like big tall trees", env={"COLUMNS": "60"})
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= 60 and "\x1b" not in r.stdout
    assert [line.split()[0] for line in lines if line.startswith(("embed", "block"))] == ["embed", "block", "block"]
    assert "positions 0–3 of 14 shown; use --position P or a wider" in r.stdout.replace("\n", " ")
    assert "each cell: the most likely next token" in r.stdout


def test_lens_json_last_cell_is_predict(m):
    # Exact equality across two commands needs one BLAS thread count for both: each command picks its own from
    # the machine's load, and 1 and 2 threads sum in different orders (logits then differ by ~1e-8).
    one_thread = {"LLMX_THREADS": "1"}
    data = json_of("lens", *m, TEXT, "--top", "3", env=one_thread)
    assert set(data) == {"model", "ids", "tokens", "layers", "positions", "top"}
    assert data["layers"] == ["embed", "block 0", "block 1"] and data["positions"] == list(range(7))
    assert set(data["top"][0][0][0]) == {"rank", "id", "token", "prob", "logit"}
    assert data["top"][-1][-1] == json_of("predict", *m, TEXT, "--top", "3", env=one_thread)["predictions"]
    one = json_of("lens", *m, TEXT, "--position", "-1", env=one_thread)
    assert one["positions"] == [6] and len(one["top"][0][0]) == 5 and one["top"][-1][0][:3] == data["top"][-1][-1]


def test_lens_position_view(m):
    r = run("lens", *m, TEXT, "--position", "6", "--top", "2")
    assert r.stdout.startswith("After position 6 ('·is'), what the model would predict next")
    rows = [line.split()[0] for line in r.stdout.splitlines() if line.strip()]
    assert rows[-5:] == ["layer", rows[-4], "embed", "block", "block"] and set(rows[-4]) == {"─"}


def test_heads_table_and_json(m):
    r = run("heads", *m, "--seq-len", "10", "--top", "3")
    assert r.exit_code == 0, r.stderr
    header = next(line for line in r.stdout.splitlines() if line.startswith("layer.head"))
    assert header.split() == ["layer.head", "induction", "previous", "duplicate", "│", "control:", "induction",
                              "previous", "duplicate"]
    data = json_of("heads", *m, "--seq-len", "10", "--top", "3")
    assert set(data) == {"model", "seq_len", "seed", "repeated_ids", "control_ids", "heads"}
    assert len(data["heads"]) == 3 and set(data["heads"][0]) == {
        "layer", "head", "induction", "previous", "duplicate", "control_induction", "control_previous",
        "control_duplicate"}
    assert data["repeated_ids"][1:11] == data["repeated_ids"][11:]


def test_neighbors_view_and_json(m):
    r = run("neighbors", *m, " my", "--top", "3")
    assert r.exit_code == 0 and r.stdout.startswith("Token '·my' (id 616)\n")
    assert "This model unembeds with its embedding matrix" in r.stdout
    data = json_of("neighbors", *m, "--id", "616", "--top", "3")
    assert set(data) == {"model", "id", "token", "similar", "unembedded", "through_norm", "tied"}
    assert set(data["similar"][0]) == {"id", "token", "similarity"} and data["through_norm"] is True
    assert json_of("neighbors", *m, " my", "--top", "3", "--raw")["through_norm"] is False


def test_steer_side_by_side_or_one_after_the_other(m):
    args = ("steer", *m, "I hate you because", "--add", " Love", "--sub", " Hate", "--layer", "1", "--max-tokens", "6")
    wide = run(*args)
    assert wide.exit_code == 0, wide.stderr
    assert any(line.split() == ["steered", "plain"] for line in wide.stdout.splitlines())
    narrow = run(*args, env={"COLUMNS": "60"})
    assert "\nsteered:\nI hate you because" in narrow.stdout and "\nplain:\nI hate you because" in narrow.stdout


def test_steer_json_and_coef_zero_is_plain(m):
    args = ("steer", *m, "I hate you because", "--add", " Love", "--sub", " Hate", "--layer", "1", "--max-tokens", "6")
    data = json_of(*args, "--coef", "0")
    assert set(data) == {"model", "prompt", "prompt_ids", "add_ids", "sub_ids", "add_tokens", "sub_tokens", "layer",
                         "coef", "vector_norms", "seed", "steered", "plain"}
    assert data["steered"] == data["plain"] and set(data["plain"]) == {"ids", "text", "finish_reason"}
    assert data["add_tokens"] == ["<|endoftext|>", " Love"]
    steered = json_of(*args)
    assert steered["plain"] == data["plain"] and steered["steered"] != steered["plain"]


def test_explain_plain_language_and_numbers(m):
    r = run("explain", *m, TEXT, "--top", "3")
    assert r.exit_code == 0, r.stderr
    for phrase in ("1. Your text becomes 7 tokens.", "2. Each token is looked up in an embedding table",
                   "learned vector for each position", "3. The vectors pass through 2 blocks",
                   "Final LayerNorm", "5. The most likely next tokens after '·is':"):
        assert phrase in r.stdout, phrase
    assert max(len(line) for line in r.stdout.splitlines()) <= 100
    data = json_of("explain", *m, TEXT, "--top", "3")
    assert {"tokens", "blocks", "top", "positions", "entropy", "final_norm"} <= set(data)
    assert set(data["blocks"][0]) == {"layer", "heads", "attn_norm", "mlp_norm", "resid_norm"}
    assert set(data["blocks"][0]["heads"][0]) == {"head", "position", "token", "weight"}
    assert data["top"] == json_of("predict", *m, TEXT, "--top", "3")["predictions"]


@pytest.mark.parametrize("command", [
    ["explain", TEXT], ["lens", TEXT], ["lens", TEXT, "-p", "0"], ["attention", TEXT, "--layer", "0"],
    ["attention", TEXT, "--layer", "0", "--head", "0"], ["heads", "--seq-len", "5"], ["neighbors", " my"],
    ["steer", TEXT, "--add", "a", "--sub", "b", "--layer", "0", "--max-tokens", "3"]])
def test_svg_saves_the_coloured_view(m, tmp_path, command):
    path = tmp_path / "view.svg"
    r = run(*command[:1], *m, *command[1:], "--svg", str(path))
    assert r.exit_code == 0, r.stderr
    svg = path.read_text()
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>") and r.stdout != ""
    assert f"saved {path}" in r.stderr.replace("\n", "")


def test_svg_with_json_keeps_stdout_data(m, tmp_path):
    path = tmp_path / "lens.svg"
    r = run("lens", *m, TEXT, "--json", "--svg", str(path))
    assert json.loads(r.stdout)["layers"][0] == "embed" and path.read_text().startswith("<svg")


@pytest.mark.parametrize("args, message", [
    (["attention", TEXT, "--layer", "2"], "layer 2 does not exist: this model has blocks 0..1"),
    (["attention", TEXT, "--layer", "0", "--head", "4"], "head 4 does not exist"),
    (["lens", TEXT, "--position", "7"], "position 7 is outside the text's 7 tokens"),
    (["neighbors", "Hullo"], "'Hullo' is 3 tokens, not one: 'H' (39), 'ull' (724), 'o' (78)"),
    (["neighbors", "--id", "99999"], "token id 99999 is outside"),
    (["heads", "--seq-len", "40"], "sequence length 40 must be 2..31"),
    (["steer", TEXT, "--add", "a", "--sub", "b", "--layer", "5"], "layer 5 does not exist"),
])
def test_out_of_range_input_exits_1_with_one_line(m, args, message):
    r = run(*args[:1], *m, *args[1:])
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("Error: ") and message in r.stderr


@pytest.mark.parametrize("args, message", [
    (["attention", TEXT], "--layer"),
    (["attention", TEXT, "--layer", "-1"], "--layer"),
    (["neighbors"], "give either a TOKEN or --id N"),
    (["neighbors", "x", "--id", "3"], "give either a TOKEN or --id N"),
    (["steer", TEXT, "--layer", "0", "--sub", "b"], "--add"),
    (["heads", "--seq-len", "1"], "--seq-len"),
])
def test_usage_errors_exit_2(m, args, message):
    r = run(*args[:1], *m, *args[1:])
    assert r.exit_code == 2 and r.stdout == "" and message in r.stderr


def test_text_from_stdin(m):
    r = run("explain", *m, "--json", input=TEXT + "\n")
    assert [t["id"] for t in json.loads(r.stdout)["tokens"]] == [39, 724, 78, 11, 616, 1438, 318]
