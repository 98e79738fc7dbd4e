"""`llmx features`, `llmx feature` and `llmx steer --sae --feature` on a tiny GPT-2 (and Llama) with tiny SAEs
the tests write, each result checked against a computation made here from the model's traced activations."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sae_folders import write_index, write_sae
from test_cli import run

from llmx.engine.hooks import Hooks, Trace
from llmx.engine.interp import with_start

D_SAE, K = 96, 8
TEXT = "The capital of France is Paris"


@pytest.fixture(scope="module")
def m(tiny_gpt2):
    return ["-m", str(tiny_gpt2)]


@pytest.fixture(scope="module")
def sae(tmp_path_factory):
    """A TopK SAE on the stream entering block 1 of the tiny GPT-2 (SAELens >= 6 config, no centring)."""
    folder = tmp_path_factory.mktemp("sae")
    weights = write_sae(folder, 64, D_SAE, "topk", "blocks.1.hook_resid_pre", k=K, sparsity=True,
                        model_from_pretrained_kwargs={"center_writing_weights": False})
    return folder, weights


def traced_acts(lm, weights, ids: list[int]) -> np.ndarray:
    """TopK latents of the stream entering block 1, in float64, from a trace of the model."""
    trace = Trace(("blocks.1.resid_pre",))
    lm.forward(ids, hooks=trace)
    x = trace["blocks.1.resid_pre"].astype(np.float64)
    pre = (x - weights["b_dec"]) @ weights["W_enc"].astype(np.float64) + weights["b_enc"]
    acts = np.zeros_like(pre)
    for row, order in enumerate(np.argsort(-pre, axis=1)[:, :K]):
        acts[row, order] = np.maximum(pre[row, order], 0)
    return acts


def test_features_json_is_each_tokens_strongest_latents(m, sae, tiny_gpt2_model):
    folder, weights = sae
    r = run("features", *m, TEXT, "--sae", str(folder), "--top", "3", "--json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert list(data) == ["model", "sae", "sink_left_out", "tokens"] and data["sae"] == str(folder)
    lm = tiny_gpt2_model
    ids = with_start(lm, lm.tokenizer.encode(TEXT))
    assert [t["id"] for t in data["tokens"]] == ids and [t["index"] for t in data["tokens"]] == list(range(len(ids)))
    assert [t["text"] for t in data["tokens"]] == [lm.token_text(i) for i in ids]
    want = traced_acts(lm, weights, ids)
    assert data["sink_left_out"] is True and data["tokens"][0]["features"] == [] and want[0].max() > 0
    sink = json.loads(run("features", *m, TEXT, "--sae", str(folder), "--top", "3", "--json", "--sink").stdout)
    assert sink["sink_left_out"] is False and sink["tokens"][1:] == data["tokens"][1:]
    for token, row in zip(sink["tokens"], want):
        assert [list(f) for f in token["features"]] == [["id", "act"]] * len(token["features"])
        best = [int(i) for i in np.argsort(-row)[:3] if row[i] > 0]
        assert [f["id"] for f in token["features"]] == best
        acts = [f["act"] for f in token["features"]]
        assert acts == sorted(acts, reverse=True)
        np.testing.assert_allclose(acts, row[best], atol=1e-4, rtol=0)  # float32 vs float64: see test_sae_load


def test_features_view_lists_every_token(m, sae):
    r = run("features", *m, "Hullo, my name is", "--sae", str(sae[0]))
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"Latents of the SAE {sae[0]} at blocks.1.resid_pre, for each of 8 tokens:"
    assert [line.split()[:2] for line in lines[4:]] == [["0", "<|endoftext|>"], ["1", "H"], ["2", "ull"], ["3", "o"],
                                                        ["4", ","], ["5", "·my"], ["6", "·name"], ["7", "·is"]]
    assert lines[4].split(maxsplit=2)[2] == "attention sink: left out (--sink shows it)"
    shown = run("features", *m, "Hullo, my name is", "--sae", str(sae[0]), "--sink").stdout.splitlines()
    assert "sink" not in shown[4] and shown[5:] == lines[5:]


def index_for(lm, n_top: int = 3, width: int = 6) -> dict:
    """An index of feature 2 with two contexts (one at the start of a document, with -1 before it)."""
    top_acts = np.zeros((D_SAE, n_top))
    top_tokens = np.full((D_SAE, n_top, width), -1)
    top_center = np.zeros((D_SAE, n_top))
    top_acts[2, :2] = [5.5, 2.25]
    first, second = lm.tokenizer.encode(" the cat sat on the mat"), lm.tokenizer.encode("Paris is big")
    top_tokens[2, 0] = first
    top_center[2, 0] = 2  # " sat"
    top_tokens[2, 1, 3:] = second
    top_center[2, 1] = 3  # "Paris", the document's first token
    hist = np.zeros((D_SAE, 4))
    hist[2] = [3, 0, 1, 2]
    density = np.full(D_SAE, 0.01)
    density[2] = 0.125
    return dict(top_acts=top_acts, top_tokens=top_tokens, top_center=top_center, density=density, hist=hist,
                tokens=4096, window=(2, 3), model="tiny")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, sae, tiny_gpt2_model):
    import shutil

    folder = tmp_path_factory.mktemp("indexed")
    shutil.copytree(sae[0], folder, dirs_exist_ok=True)
    write_index(folder, **index_for(tiny_gpt2_model))
    return folder


def test_feature_card_from_the_index(m, indexed, tiny_gpt2_model, sae):
    r = run("feature", "2", *m, "--sae", str(indexed), "--json", "--top", "3")
    assert r.exit_code == 0, r.stderr
    card = json.loads(r.stdout)
    assert (card["source"], card["tokens"], card["density"], card["feature"], card["d_sae"]) == ("index", 4096, 0.125,
                                                                                               2, D_SAE)
    assert [(c["act"], "".join(c["tokens"]), c["tokens"][c["center"]]) for c in card["contexts"]] == [
        (5.5, " the cat sat on the mat", " sat"), (2.25, "Paris is big", "Paris")]
    assert card["histogram"] == {"edges": [0.0, 1.375, 2.75, 4.125, 5.5], "counts": [3, 0, 1, 2]}
    one = json.loads(run("feature", "2", *m, "--sae", str(indexed), "--json", "--contexts", "1").stdout)
    assert one["contexts"] == card["contexts"][:1]
    lm, w_dec = tiny_gpt2_model, sae[1]["W_dec"][2].astype(np.float64)
    g, unembed = lm.weights.ln_final.g.astype(np.float64), lm.weights.unembed.astype(np.float64)
    logits = unembed @ ((w_dec - w_dec.mean()) * g)  # TransformerLens' fold_ln: LayerNorm's centring and scale
    assert [t["id"] for t in card["positive"]] == list(np.argsort(-logits)[:3])
    assert [t["id"] for t in card["negative"]] == list(np.argsort(logits)[:3])
    np.testing.assert_allclose([t["value"] for t in card["positive"]], np.sort(logits)[::-1][:3], atol=1e-4)


def test_feature_card_view_highlights_the_token(m, indexed):
    r = run("feature", "2", *m, "--sae", str(indexed), "--top", "2")
    assert r.exit_code == 0, r.stderr
    assert "Fires on 12.50% of 4,096 tokens (from the SAE's index)." in " ".join(r.stdout.split())
    assert " the cat« sat» on the mat" in r.stdout and "«Paris» is big" in r.stdout
    assert "0.00 █ ▃▆ 5.50" in r.stdout  # counts 3, 0, 1, 2


def test_feature_card_scans_data_instead(m, sae, tiny_gpt2_model, tmp_path):
    folder, weights = sae
    text = "The capital of France is Paris. It lies on the Seine, and the Seine runs to the sea."
    (tmp_path / "data.txt").write_text(text)
    lm = tiny_gpt2_model
    ids = lm.tokenizer.encode(text)
    every = traced_acts(lm, weights, with_start(lm, ids))[1:]  # the start token is not counted
    feature = int(np.argmax((every > 0).sum(axis=0) * (every > 0).any(axis=0) * ((every > 0).mean(axis=0) < 1)))
    acts = every[:, feature]
    assert 0 < (acts > 0).sum() < len(acts)
    r = run("feature", str(feature), *m, "--sae", str(folder), "--data", str(tmp_path / "data.txt"), "--json")
    assert r.exit_code == 0, r.stderr
    card = json.loads(r.stdout)
    assert card["source"] == "data" and card["tokens"] == len(ids)
    assert card["density"] == pytest.approx(np.mean(acts > 0))
    assert sum(card["histogram"]["counts"]) == int((acts > 0).sum())
    strongest = card["contexts"][0]
    assert strongest["act"] == pytest.approx(acts.max(), abs=1e-4)
    assert strongest["ids"][strongest["center"]] == ids[int(np.argmax(acts))]
    assert [c["act"] for c in card["contexts"]] == sorted((c["act"] for c in card["contexts"]), reverse=True)


def test_feature_without_index_or_data_takes_density_from_sparsity(m, sae):
    r = run("feature", "2", *m, "--sae", str(sae[0]), "--json")
    from safetensors.numpy import load_file

    card = json.loads(r.stdout)
    log = load_file(str(sae[0] / "sparsity.safetensors"))["sparsity"]
    assert (card["source"], card["contexts"], card["histogram"]) == ("none", [], None)
    assert card["density"] == pytest.approx(10.0 ** float(log[2]), rel=1e-6)


def test_steer_with_a_feature_adds_its_decoder_direction_at_the_hook(m, sae, tiny_gpt2_model):
    folder, weights = sae
    r = run("steer", *m, "I went to the", "--sae", str(folder), "--feature", "4", "--coef", "30",
            "--max-tokens", "8", "--json")
    assert r.exit_code == 0, r.stderr
    st = json.loads(r.stdout)
    lm = tiny_gpt2_model
    vector = np.float32(30) * weights["W_dec"][4]
    hooks = Hooks([("blocks.1.resid_pre", lambda value, site: value + vector)])
    prompt = with_start(lm, lm.tokenizer.encode("I went to the"))
    assert st["steered"]["ids"] == lm.complete(prompt, 8, seed=0, hooks=hooks).ids
    assert st["plain"]["ids"] == lm.complete(prompt, 8, seed=0).ids != st["steered"]["ids"]
    assert (st["hook"], st["feature"], st["coef"]) == ("blocks.1.resid_pre", 4, 30.0)
    assert st["vector_norm"] == pytest.approx(30.0, rel=1e-5)  # the test SAE's decoder rows have unit norm


def test_steer_view_with_a_feature(m, sae):
    r = run("steer", *m, "I went to the", "--sae", str(sae[0]), "--feature", "4", "--max-tokens", "4")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith(f"Steering with feature 4 of {sae[0]}: 5 × its decoder direction")
    assert "steered" in r.stdout and "plain" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--sae", "x"], "steering with a feature needs both --sae and --feature"),
    (["--feature", "3"], "steering with a feature needs both --sae and --feature"),
    (["--sae", "x", "--feature", "3", "--layer", "1"], "give either --add/--sub/--layer or --sae/--feature"),
    (["--add", "a", "--sub", "b"], "give --add, --sub and --layer (or --sae and --feature)"),
])
def test_steer_options_go_together(m, args, message):
    r = run("steer", *m, "Hi", *args)
    assert r.exit_code == 2 and message in r.stderr


def test_errors_are_one_line(m, sae, tmp_path):
    write_sae(tmp_path / "gated", 64, D_SAE, "gated", "blocks.1.hook_resid_pre")
    for args, message in [
        (["features", "Hi", "--sae", str(tmp_path / "gated")], "the SAE's architecture is gated"),
        (["feature", "96", "--sae", str(sae[0])], "feature 96 does not exist: this SAE has latents 0..95"),
        (["features", "Hi", "--sae", str(tmp_path / "none")], "no such folder" if False else "has no cfg.json"),
        (["steer", "Hi", "--sae", str(sae[0]), "--feature", "100"], "feature 100 does not exist"),
    ]:
        r = run(*args, *m)
        assert r.exit_code == 1 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr


def test_features_and_steering_on_llama(tiny_llama, tmp_path):
    """RMSNorm: no centring, output tokens through the final norm's scale alone."""
    from llmx.engine import load

    weights = write_sae(tmp_path, 64, D_SAE, "jumprelu", "blocks.0.hook_resid_post")
    m = ["-m", str(tiny_llama)]
    r = run("feature", "3", *m, "--sae", str(tmp_path), "--json", "--top", "2")
    assert r.exit_code == 0, r.stderr
    lm = load(str(tiny_llama))
    logits = lm.weights.unembed.astype(np.float64) @ (weights["W_dec"][3] * lm.weights.ln_final.g.astype(np.float64))
    assert [t["id"] for t in json.loads(r.stdout)["positive"]] == list(np.argsort(-logits)[:2])
    assert "removing the stream's mean" not in r.stderr
    r = run("features", "Hullo", *m, "--sae", str(tmp_path), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["tokens"][-1]["text"] == "o"


def test_feature_card_svg(m, indexed, tmp_path):
    r = run("feature", "2", *m, "--sae", str(indexed), "--svg", str(tmp_path / "card.svg"))
    assert r.exit_code == 0, r.stderr
    svg = (tmp_path / "card.svg").read_text()
    assert svg.startswith("<svg") and "Feature&#160;2&#160;of&#160;96" in svg


def test_notebook_views_of_features_hold_what_the_commands_print(m, sae, indexed, tiny_gpt2_model):
    import llmx.show

    view = llmx.show.features(tiny_gpt2_model, TEXT, str(sae[0]), top=3)
    printed = json.loads(run("features", *m, TEXT, "--sae", str(sae[0]), "--top", "3", "--json").stdout)
    assert {k: v for k, v in json.loads(view.json()).items() if k != "model"} == {
        k: v for k, v in printed.items() if k != "model"}
    assert "attention sink" in view.text(80)
    card = llmx.show.feature(tiny_gpt2_model, 2, str(indexed), top=3)
    printed = json.loads(run("feature", "2", *m, "--sae", str(indexed), "--json", "--top", "3").stdout)
    assert {k: v for k, v in json.loads(card.json()).items() if k != "model"} == {
        k: v for k, v in printed.items() if k != "model"}
    assert "«Paris» is big" in card.text(80)
