"""llmx sae train: the TopK SAE's hand-written gradients, its training on a known sparse ground truth,
the folding of the normalisation into the saved weights, and the command end to end on a tiny model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from llmx.engine.sae.train.fit import FitOptions, Normalizer, fit, fold, normalizer
from llmx.engine.sae.train.topk import Params, aux_grads, encode, init_params, loss_and_grads, pre_acts, reconstruct


def random_params(d: int, m: int, seed: int) -> Params:
    rng = np.random.default_rng(seed)
    p = init_params(d, m, rng, np.float64)
    return Params(p.w_enc + 0.3 * rng.standard_normal(p.w_enc.shape), 0.1 * rng.standard_normal(m),
                  p.w_dec, 0.2 * rng.standard_normal(d))


def total_loss(p: Params, x, k, dead, k_aux, coef, fixed, e) -> float:
    """The loss as the gradients define it: the auxiliary loss's target e = x - x_hat held constant (no
    gradient flows through it) and the active set held fixed (it is piecewise constant: finite
    differences must not cross a change of the top-k, which the check makes sure of)."""
    step = loss_and_grads(p, x, k, dead, k_aux, 0.0)
    assert np.array_equal(np.sort(step.sparse.idx, axis=1), fixed)
    if coef == 0:
        return step.loss
    scratch = [np.zeros_like(p.w_enc), np.zeros_like(p.b_enc), np.zeros_like(p.w_dec)]
    return step.loss + aux_grads(p, x - p.b_dec, pre_acts(p, x), e, dead, k_aux, coef, scratch)


CASES = [  # (k_aux, aux_coef, dead latents): no AuxK; fewer dead than k_aux (scale < 1); more dead than k_aux
    (4, 0.0, ()), (16, 0.5, (1, 3, 5, 7, 11, 13, 17, 19)), (3, 0.5, (0, 2, 4, 6, 8, 10, 12, 14, 16, 18))]


def setting(dead_list, m=24):
    dead = np.zeros(m, bool)
    dead[list(dead_list)] = True
    return dead


@pytest.mark.parametrize("k_aux, coef, dead_list", CASES)
def test_gradients_match_finite_differences_in_float64(k_aux, coef, dead_list):
    # Central differences in float64 have an error of order eps^2 (the loss is a quadratic in each weight
    # while the active sets stay fixed) plus rounding of order 1e-16 / eps: about 1e-10 relative here.
    d, m, k, n = 8, 24, 4, 16
    p = random_params(d, m, seed=1)
    x = np.random.default_rng(2).standard_normal((n, d))
    dead = setting(dead_list, m)
    step = loss_and_grads(p, x, k, dead, k_aux, coef)
    fixed = np.sort(step.sparse.idx, axis=1)
    e = x - reconstruct(p, x, k)
    rng, eps = np.random.default_rng(3), 1e-6
    for name in ("w_enc", "b_enc", "w_dec", "b_dec"):
        value, grad = getattr(p, name), getattr(step.grads, name)
        for flat in rng.choice(value.size, size=min(value.size, 12), replace=False):
            at = np.unravel_index(flat, value.shape)
            up, down = value.copy(), value.copy()
            up[at] += eps
            down[at] -= eps
            f_up = total_loss(dataclasses.replace(p, **{name: up}), x, k, dead, k_aux, coef, fixed, e)
            f_down = total_loss(dataclasses.replace(p, **{name: down}), x, k, dead, k_aux, coef, fixed, e)
            assert grad[at] == pytest.approx((f_up - f_down) / (2 * eps), rel=1e-6, abs=1e-10), (name, at)


@pytest.mark.parametrize("k_aux, coef, dead_list", CASES)
def test_gradients_match_pytorch_autograd(k_aux, coef, dead_list):
    torch = pytest.importorskip("torch")
    d, m, k, n = 8, 24, 4, 16
    p = random_params(d, m, seed=4)
    x = np.random.default_rng(5).standard_normal((n, d))
    dead = setting(dead_list, m)
    step = loss_and_grads(p, x, k, dead, k_aux, coef)
    t = {f.name: torch.tensor(getattr(p, f.name), requires_grad=True) for f in dataclasses.fields(p)}
    loss = torch_loss(torch, t, torch.tensor(x), k, torch.tensor(dead), k_aux, coef)
    loss.backward()
    assert loss.item() == pytest.approx(step.loss + step.aux, rel=1e-12)
    for name, tensor in t.items():  # float64 both sides: only rounding differs
        np.testing.assert_allclose(getattr(step.grads, name), tensor.grad.numpy(), rtol=1e-9, atol=1e-14)


def torch_loss(torch, t, x, k, dead, k_aux, coef):
    """The same loss written plainly with torch ops (SAELens' TopK SAE and AuxK), for autograd."""
    n, d = x.shape
    pre = (x - t["b_dec"]) @ t["w_enc"] + t["b_enc"]
    top = torch.topk(pre, k, dim=1)
    acts = torch.zeros_like(pre).scatter(1, top.indices, torch.relu(top.values))
    x_hat = acts @ t["w_dec"] + t["b_dec"]
    loss = ((x_hat - x) ** 2).sum() / (n * d)
    if coef == 0 or not bool(dead.any()):
        return loss
    e = (x - x_hat).detach()
    dead_pre = pre.masked_fill(~dead, float("-inf"))
    top_aux = torch.topk(dead_pre, min(k_aux, int(dead.sum())), dim=1)
    aux_acts = torch.zeros_like(pre).scatter(1, top_aux.indices, torch.relu(top_aux.values))
    scale = coef * min(1.0, int(dead.sum()) / k_aux)
    return loss + scale * ((aux_acts @ t["w_dec"] - e) ** 2).sum() / (n * d)


def sparse_data(n: int, d: int, n_atoms: int, active: int, seed: int):
    """x = sum of `active` known unit atoms per row with positive coefficients, plus an offset: [n, d]."""
    rng = np.random.default_rng(seed)
    atoms = rng.standard_normal((n_atoms, d))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    codes = np.zeros((n, n_atoms))
    for row in codes:
        row[rng.choice(n_atoms, active, replace=False)] = rng.uniform(0.5, 2.0, active)
    return (codes @ atoms + 3.0).astype(np.float32), atoms


def test_sae_recovers_the_atoms_of_a_sparse_ground_truth():
    x, atoms = sparse_data(4096, 16, 32, 3, seed=0)
    params, norm = fit(x, FitOptions(latents=64, k=3, lr=5e-3, batch=256, epochs=8, dead_after=2000, warmup=10))
    w_dec = fold(params, norm).w_dec
    directions = w_dec / np.linalg.norm(w_dec, axis=1, keepdims=True)
    best = (atoms @ directions.T).max(axis=1)  # each atom's closest decoder direction
    assert (best >= 0.9).mean() >= 0.9


def test_folding_the_normalisation_encodes_raw_inputs_as_the_normalised_ones():
    # fold is exact algebra; float32 weights against a float64 reference differ by rounding only
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((64, 8)) * 40 + 7).astype(np.float32)
    norm = normalizer(x, np.linalg.norm(x, axis=1))
    p = random_params(8, 24, seed=7)
    p32 = Params(*(a.astype(np.float32) for a in (p.w_enc, p.b_enc, p.w_dec, p.b_dec)))
    raw = fold(p32, norm)
    xn = (x.astype(np.float64) - norm.mean) / norm.scale
    ref = encode(p, xn, 4)
    got = encode(Params(*(a.astype(np.float64) for a in (raw.w_enc, raw.b_enc, raw.w_dec, raw.b_dec))), x, 4)
    np.testing.assert_array_equal(np.sort(got.idx, axis=1), np.sort(ref.idx, axis=1))
    np.testing.assert_allclose(np.sort(got.acts, axis=1), np.sort(ref.acts, axis=1), rtol=1e-5, atol=1e-5)
    recon = reconstruct(raw, x, 4).astype(np.float64)
    np.testing.assert_allclose(recon, reconstruct(p, xn, 4) * norm.scale + norm.mean, rtol=1e-5, atol=1e-3)


def test_normaliser_leaves_out_attention_sinks():
    x = np.random.default_rng(8).standard_normal((100, 4)).astype(np.float32)
    x[3] *= 1000  # one row a thousand times larger, as an attention sink's residual
    norm = normalizer(x, np.linalg.norm(x, axis=1))
    assert not norm.kept(x)[3] and norm.kept(x).sum() == 99
    np.testing.assert_allclose(norm.mean, np.delete(x, 3, axis=0).astype(np.float64).mean(axis=0), rtol=1e-6)


def test_a_row_beyond_float16_is_left_out_like_a_sink():
    """Gemma 3's massive activations (one dimension past 65504 at a few positions) are inf in the float16 rows
    collected: left out, and the mean and scale of the others stay finite."""
    x = np.random.default_rng(8).standard_normal((100, 4)).astype(np.float16)
    with np.errstate(over="ignore"):
        x[5, 1] = np.float16(70000.0)  # inf
    norm = normalizer(x, np.linalg.norm(x.astype(np.float32), axis=1))
    assert not norm.kept(x)[5] and norm.kept(x).sum() == 99
    assert np.isfinite(norm.mean).all() and np.isfinite(norm.scale)


TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
        "want of a wife. However little known the feelings or views of such a man may be on his first entering "
        "a neighbourhood, this truth is so well fixed in the minds of the surrounding families. ")


@pytest.fixture
def corpus(tmp_path):
    for i, name in enumerate(["a.txt", "b.txt", "c.txt"]):
        (tmp_path / name).write_text(TEXT * (3 + i), encoding="utf-8")
    return tmp_path


def test_train_through_the_cli_writes_a_saelens_folder_and_reports_json(tiny_gpt2, corpus):
    import json

    from llmx.engine import load
    from llmx.engine.formats.safetensors import read_safetensors
    from llmx.engine.sae.index import read_index
    from test_cli import run

    out = corpus / "sae"
    result = run("sae", "train", "-m", str(tiny_gpt2), "--layer", "1", "--data", str(corpus / "a.txt"),
                 str(corpus / "b.txt"), str(corpus / "c.txt"), "--out", str(out), "--window", "16", "--latents",
                 "32", "--k", "4", "--epochs", "3", "--batch", "64", "--json")
    assert result.exit_code == 0, result.stderr
    m = json.loads(result.stdout)
    assert list(m) == ["fve", "l0", "dead", "ce_recovered", "ce_clean", "ce_sae", "ce_zero", "latents", "k", "tokens"]
    assert (m["latents"], m["k"]) == (32, 4) and 0 < m["l0"] <= 4 and 0 <= m["dead"] < 1
    assert m["tokens"] > 0 and m["ce_zero"] > m["ce_clean"] > 0
    cfg = json.loads((out / "cfg.json").read_text())
    assert (cfg["architecture"], cfg["d_in"], cfg["d_sae"], cfg["k"], cfg["hook_name"]) == \
        ("topk", 64, 32, 4, "blocks.1.hook_resid_post")
    assert cfg["normalize_activations"] == "none" and cfg["apply_b_dec_to_input"] is True
    assert cfg["metadata"]["llmx"]["metrics"] == m
    weights = read_safetensors(out / "sae_weights.safetensors")
    assert weights["W_enc"].shape == (64, 32) and weights["W_dec"].shape == (32, 64)
    sparsity = read_safetensors(out / "sparsity.safetensors")["sparsity"]
    index = read_index(out)
    np.testing.assert_allclose(sparsity, np.log10(index.density.astype(np.float64) + 1e-10), rtol=1e-6)
    assert index.top_tokens.shape == (32, 16, 17) and index.tokens == m["tokens"]
    assert (np.diff(index.top_acts, axis=1) <= 0).all()  # strongest first
    lm = load(str(tiny_gpt2))
    fired = index.top_acts[:, 0] > 0
    centers = index.top_tokens[fired, 0, index.window_before]
    assert ((centers >= 0) & (centers < lm.config.n_vocab)).all()


def test_plain_output_is_a_short_report(tiny_gpt2, corpus):
    from test_cli import run

    result = run("sae", "train", "-m", str(tiny_gpt2), "--layer", "0", "--data", str(corpus), "--out",
                 str(corpus / "sae"), "--window", "16", "--latents", "16", "--k", "2", "--epochs", "1")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("latents 16, k 2, trained on ") and lines[1].startswith("variance explained")
    assert "CE loss recovered" in result.stdout


@pytest.mark.parametrize("args, code, message", [
    (["--layer", "2"], 1, "layer 2 is out of range"),
    (["--layer", "0", "--expansion", "2", "--latents", "8"], 2, "give --expansion or --latents, not both"),
    (["--layer", "0", "--k", "40", "--latents", "32"], 1, "--k 40 must be between 1"),
])
def test_bad_settings_are_one_line_errors(tiny_gpt2, corpus, args, code, message):
    from test_cli import run

    result = run("sae", "train", "-m", str(tiny_gpt2), "--data", str(corpus / "a.txt"), "--out",
                 str(corpus / "sae"), "--window", "16", *args)
    assert result.exit_code == code and message in result.stderr and len(result.stderr.splitlines()) == 1


def test_missing_data_is_one_line_error(tiny_gpt2, corpus):
    from test_cli import run

    result = run("sae", "train", "-m", str(tiny_gpt2), "--layer", "0", "--data", str(corpus / "nope.txt"),
                 "--out", str(corpus / "sae"))
    assert result.exit_code == 1 and "no such file" in result.stderr


def test_a_killed_collection_continues_where_it_stopped(tiny_gpt2_model, tmp_path):
    from llmx.engine.sae.train import collect as c

    windows = np.random.default_rng(9).integers(0, 50000, (3 * c.FLUSH_EVERY, 8)).astype(np.int32)
    whole = c.collect(tiny_gpt2_model, windows, 1, tmp_path / "whole")

    def killed(done, total):
        if done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        c.collect(tiny_gpt2_model, windows, 1, tmp_path / "acts", on_progress=killed)
    seen = []
    again = c.collect(tiny_gpt2_model, windows, 1, tmp_path / "acts", on_progress=lambda d, t: seen.append(d))
    assert seen[0] == c.FLUSH_EVERY * 7  # started after the flushed windows (7 positions each)
    np.testing.assert_array_equal(again.x, whole.x)
    np.testing.assert_array_equal(again.ids, windows)


def test_index_keeps_each_latents_strongest_contexts_and_a_histogram(tmp_path):
    from llmx.engine.sae.index import Firings, build_index, read_index, write_index

    ids = np.arange(20, dtype=np.int32).reshape(2, 10)  # 2 windows of 10 tokens; rows skip position 0
    f = Firings(token=np.array([0, 5, 9, 3, 17]), latent=np.array([0, 0, 0, 2, 0]),
                act=np.array([1.0, 4.0, 2.0, 3.0, 0.5], np.float32))
    index = build_index(f, d_sae=3, n_tokens=18, ids=ids, skip=1, model="tiny", n_top=2, before=2, after=1, n_bins=4)
    assert index.top_acts.tolist() == [[4.0, 2.0], [0.0, 0.0], [3.0, 0.0]]
    # latent 0's best: row 5 = window 0, position 6; second: row 9 = window 1, position 1
    assert index.top_tokens[0].tolist() == [[4, 5, 6, 7], [-1, 10, 11, 12]]
    assert index.top_tokens[1].tolist() == [[-1] * 4] * 2 and index.top_center[0].tolist() == [2, 2]
    np.testing.assert_allclose(index.density, [4 / 18, 0, 1 / 18])
    assert index.hist[0].tolist() == [1, 1, 1, 1] and index.hist[2].tolist() == [0, 0, 0, 1]
    write_index(tmp_path, index)
    back = read_index(tmp_path)
    assert back.top_tokens.dtype == np.int32 and back.hist.dtype == np.int64 and back.model == "tiny"
    for name in ("top_acts", "top_tokens", "top_center", "density", "hist"):
        np.testing.assert_array_equal(getattr(back, name), getattr(index, name))
    assert read_index(tmp_path / "none") is None
    from llmx.engine.errors import CheckpointError
    from llmx.engine.sae.write import write_tensors

    write_tensors(tmp_path / "llmx_index.safetensors", {"density": index.density})
    with pytest.raises(CheckpointError, match="has no tensor 'top_acts'"):
        read_index(tmp_path)
