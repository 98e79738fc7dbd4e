"""llmx.show: every view from Python, the same drawing and data as the command's, in Jupyter and terminals."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

import llmx
from test_cli import run

TEXT = "Hullo, my name is"

# (show function, its arguments after the model, the command and its arguments after the model)
VIEWS = [
    ("tokens", (TEXT,), {}, ["tokenize", TEXT]),
    ("predict", (TEXT,), {"top": 3}, ["predict", TEXT, "--top", "3"]),
    ("score", (TEXT,), {"bos": True}, ["score", TEXT, "--bos"]),
    ("lens", (TEXT,), {}, ["lens", TEXT]),
    ("lens", (TEXT,), {"position": -1, "top": 2}, ["lens", TEXT, "--position", "-1", "--top", "2"]),
    ("attention", (TEXT,), {"layer": 1}, ["attention", TEXT, "--layer", "1"]),
    ("attention", (TEXT,), {"layer": 0, "head": 2}, ["attention", TEXT, "--layer", "0", "--head", "2"]),
    ("heads", (), {"seq_len": 6, "top": 4}, ["heads", "--seq-len", "6", "--top", "4"]),
    ("neighbors", (" my",), {"top": 3}, ["neighbors", " my", "--top", "3"]),
    ("neighbors", (616,), {"raw": True}, ["neighbors", "--id", "616", "--raw"]),
    ("explain", (TEXT,), {"top": 3}, ["explain", TEXT, "--top", "3"]),
    ("steer", ("I hate you because", " Love", " Hate", 1), {"max_tokens": 5},
     ["steer", "I hate you because", "--add", " Love", "--sub", " Hate", "--layer", "1", "--max-tokens", "5"]),
    ("attribute", (TEXT, " is"), {"foil": " was", "top": 4}, ["attribute", TEXT, "--target", " is", "--foil", " was",
                                                              "--top", "4"]),
    ("patch", ("Hullo, my name is", "Hullo, your name is", " John", " Mary"), {},
     ["patch", "Hullo, my name is", "Hullo, your name is", "--target", " John", "--foil", " Mary"]),
]
IDS = [" ".join(map(str, command)) for *_, command in VIEWS]


def shown(name, args, options, model):
    return getattr(llmx.show, name)(model, *args, **options)


@pytest.mark.parametrize("name, args, options, command", VIEWS, ids=IDS)
def test_each_view_draws_and_holds_what_its_command_prints(name, args, options, command, tiny_gpt2_model):
    view = shown(name, args, options, tiny_gpt2_model)
    m = ["-m", tiny_gpt2_model.name]
    assert view.text(100) == run(*command[:1], *m, *command[1:]).stdout
    assert json.loads(view.json()) == json.loads(run(*command[:1], *m, *command[1:], "--json").stdout)


@pytest.mark.parametrize("name, args, options, command", VIEWS[:4], ids=IDS[:4])
def test_a_model_name_gives_the_same_view_as_a_loaded_model(name, args, options, command, tiny_gpt2_model):
    by_name = shown(name, args, options, tiny_gpt2_model.name)
    assert by_name.text(100) == shown(name, args, options, tiny_gpt2_model).text(100)
    assert by_name.model == tiny_gpt2_model.name


def test_jupyter_gets_coloured_html_and_plain_text(tiny_gpt2_model):
    view = llmx.show.lens(tiny_gpt2_model, TEXT)
    bundle = view._repr_mimebundle_()
    assert bundle["text/plain"] == str(view) and "position" in bundle["text/plain"]
    html = bundle["text/html"]
    assert html.startswith("<pre") and "background-color: #" in html and "probability of the top token" in html
    assert "&lt;10%" in html and "<script" not in html  # the legend, escaped; no code
    assert repr(view).startswith("<llmx view: llmx lens")


def test_a_rich_console_lays_the_view_out_at_its_own_width(tiny_gpt2_model):
    view = llmx.show.attention(tiny_gpt2_model, TEXT, layer=1)
    narrow = Console(file=io.StringIO(), width=30, color_system=None)
    narrow.print(view)
    lines = narrow.file.getvalue().splitlines()
    assert max(map(len, lines)) <= 30 and "heads 0–1 of 4 shown" in " ".join(lines)
    coloured = Console(file=io.StringIO(), width=100, force_terminal=True, color_system="truecolor")
    coloured.print(view)
    assert "\x1b[" in coloured.file.getvalue() and "attention on that token:" in coloured.file.getvalue()


def test_save_svg_is_the_image_of_the_command(tiny_gpt2_model, tmp_path):
    path = tmp_path / "lens.svg"
    llmx.show.lens(tiny_gpt2_model, TEXT).save_svg(path)
    command = tmp_path / "command.svg"
    run("lens", "-m", tiny_gpt2_model.name, TEXT, "--svg", str(command))
    assert path.read_text() == command.read_text()


def test_view_data_is_the_engines_result(tiny_gpt2_model):
    lens = llmx.show.lens(tiny_gpt2_model, TEXT, top=3)
    predict = llmx.show.predict(tiny_gpt2_model, TEXT, top=3)
    assert lens.data.top[-1][-1] == predict.data.predictions and lens.data.layers[0] == "embed"
