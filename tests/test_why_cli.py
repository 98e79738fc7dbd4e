"""`llmx attribute`, `llmx patch` and `--ablate` from the command line: the JSON the issue specifies, the views,
one-line errors that say what to do."""

from __future__ import annotations

import json

import pytest

from test_cli import run

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


@pytest.fixture
def m(tiny_gpt2):
    return ["-m", str(tiny_gpt2)]


def test_attribute_json_is_the_documented_object_and_adds_up(m):
    r = run("attribute", *m, CLEAN, "--target", " Mary", "--foil", " John", "--json")
    data = json.loads(r.stdout)
    assert list(data) == ["model", "prompt_tokens", "position", "target", "foil", "total", "components"]
    assert data["target"] == {"id": 5335, "token": " Mary"} and data["foil"] == {"id": 1757, "token": " John"}
    assert data["position"] == len(data["prompt_tokens"]) - 1 == 13
    assert all(list(c) == ["name", "layer", "head", "value"] for c in data["components"])
    names = [c["name"] for c in data["components"]]
    assert names[:3] == ["embed", "pos_embed", "L0.H0"] and names[-2:] == ["bias", "norm"] and "L1.mlp" in names
    assert abs(sum(c["value"] for c in data["components"]) - data["total"]) <= 1e-4 * abs(data["total"])
    nobody = json.loads(run("attribute", *m, "Hullo", "--target", "#318", "--json").stdout)
    assert nobody["foil"] is None and nobody["target"]["token"] == " is"


def test_attribute_view_shows_the_top_components_heads_and_layers(m):
    out = run("attribute", *m, CLEAN, "--target", " Mary", "--foil", " John", "--top", "3").stdout
    assert "logit('·Mary') - logit('·John')" in out and "frozen" in out
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("component "))
    rows = lines[start + 2:lines.index("", start)]
    assert len(rows) == 3
    assert "H0" in out and "mlp" in out and "block 1" in out


def test_patch_json_is_the_documented_object(m):
    data = json.loads(run("patch", *m, CLEAN, CORRUPT, "--target", " Mary", "--foil", " John", "--json").stdout)
    assert list(data) == ["model", "clean_tokens", "corrupt_tokens", "target", "foil", "clean_ld", "corrupt_ld",
                          "resid_pre", "attn_out", "mlp_out", "heads"]
    assert [len(data["resid_pre"]), len(data["resid_pre"][0]), len(data["heads"][0])] == [2, 14, 4]
    assert data["resid_pre"][0][9] == pytest.approx(1, abs=1e-4)  # float32: ~1e-6 / (LD_clean - LD_corrupt)
    assert data["resid_pre"][0][:9] == [0] * 9 and data["resid_pre"][0][10:] == [0] * 4


def test_patch_view_has_the_tokens_as_columns(m):
    out = run("patch", *m, CLEAN, CORRUPT, "--target", " Mary", "--foil", " John").stdout
    lines = out.splitlines()
    header = next(line for line in lines if "·went" in line)
    assert header.split() == ["When", "·Mary", "·and", "·John", "·went", "·to", "·the", "·sto…", ",", "·John", "·gave",
                              "·a", "·dri…", "·to"]
    assert all(site in out for site in ("resid_pre:", "attn_out:", "mlp_out:", "heads:"))


def test_prompts_of_different_lengths_are_one_line_with_both_tokenizations(m):
    r = run("patch", *m, "The Eiffel Tower", "The Colosseum!", "--target", " Paris", "--foil", " Rome")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert "The| E|iff|el| Tower" in r.stderr and "The| Col|os|se|um|!" in r.stderr


@pytest.mark.parametrize("args,message", [
    (["attribute", "Hi", "--target", " Mary Ann"], "give one of them, or its id as #ID"),
    (["attribute", "Hi", "--target", "#60000"], "outside this model's vocabulary"),
    (["predict", "Hi", "--ablate", "5.0"], "layer 5 does not exist"),
])
def test_errors_are_one_line(m, args, message):
    r = run(*args[:1], *m, *args[1:])
    assert r.exit_code == 1 and message in r.stderr and r.stderr.count("\n") == 1


def test_a_malformed_ablation_is_a_usage_error(m):
    r = run("predict", *m, "Hi", "--ablate", "1-2")
    assert r.exit_code == 2 and "LAYER.HEAD" in r.stderr


def test_ablate_changes_predict_score_and_continue(m):
    plain = json.loads(run("predict", *m, CLEAN, "--json").stdout)
    zero = json.loads(run("predict", *m, CLEAN, "--ablate", "0.0,1.2", "--ablate", "1.mlp", "--json").stdout)
    mean = json.loads(run("predict", *m, CLEAN, "--ablate", "0.0,1.2,1.mlp", "--ablate-mode", "mean", "--json").stdout)
    assert plain["predictions"] != zero["predictions"] != mean["predictions"]
    assert json.loads(run("predict", *m, CLEAN, "--ablate", "0.0,1.2,1.mlp", "--json").stdout) == zero
    scores = [json.loads(run("score", *m, CLEAN, *extra, "--json").stdout)["perplexity"]
              for extra in ([], ["--ablate", "1.mlp"], ["--ablate", "1.mlp", "--ablate-mode", "mean"])]
    assert len(set(scores)) == 3
    from llmx.engine import load
    from llmx.engine.interp import ablated, parse_ablation

    lm = load(m[1])
    ids = lm.prompt_ids(CLEAN)
    expected = ablated(lm, parse_ablation("0.0,1.mlp"), "mean", ids).complete(ids, 8, seed=3).ids
    out = run("continue", *m, CLEAN, "--seed", "3", "--max-tokens", "8", "--ablate", "0.0,1.mlp", "--ablate-mode",
              "mean", "--json").stdout
    assert json.loads(out)["ids"] == expected


@pytest.mark.parametrize("scale, labels", [(1.0, "-0.6 -0.3 -0.1 <0 +0 +0.1 +0.3 +0.6"),
                                           (0.97, "-0.58 -0.29 -0.097 <0 +0 +0.097 +0.29 +0.58")])
def test_the_heatmap_legend_has_no_minus_zero(scale, labels):
    from llmx.views.why import signed_legend

    assert signed_legend(scale, "share").plain.split() == ["share:", *labels.split()]
