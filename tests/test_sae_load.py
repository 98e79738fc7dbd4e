"""Loading SAELens folders (new and old configs, from disk and from the Hub) and encoding/decoding against the
formulas, written here again independently in float64.

Tolerance: the engine computes in float32. Each pre-activation sums d_in = 64 products of O(1) terms, so its
rounding error is below 64 * 2**-24 * (sum of |terms|, ~10) ~ 4e-5 in the worst case and ~1e-6 typically;
decoding sums d_sae = 96 such terms. 2e-4 absolute leaves room for both, while a wrong formula (a missing
b_dec, an unbiased-vs-biased std, a forgotten rescale) moves values by 1e-2 or more.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from sae_folders import random_weights, write_sae

from llmx.engine.errors import SaeError
from llmx.engine.sae import load_sae
from llmx.engine.sae.model import SparseAutoencoder
from llmx.engine.sae.saelens import llmx_site

D_IN, D_SAE, K = 64, 96, 8
ATOL = 2e-4
HOOK = "blocks.1.hook_resid_pre"
ARCHITECTURES = ["standard", "topk", "jumprelu"]
NORMALIZATIONS = ["none", "expected_average_only_in", "constant_norm_rescale", "layer_norm"]
SCALE = 2.5  # norm_scaling_factor of the expected_average_only_in folders


def inputs(n: int = 12, seed: int = 7) -> np.ndarray:
    """Rows with a nonzero mean and varied norms, so centring and each normalization change something."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, D_IN)) * rng.uniform(0.5, 3.0, (n, 1)) + 0.7).astype(np.float32)


def reference_normalize(x: np.ndarray, mode: str, scale: float | None):
    """(normalized x, undo) in float64, from SAELens' run_time_activation_norm_fn_in / _out."""
    if mode == "constant_norm_rescale":
        c = np.sqrt(x.shape[1]) / np.sqrt((x ** 2).sum(axis=1, keepdims=True))
        return x * c, lambda y: y / c
    if mode == "layer_norm":
        mu = x.mean(axis=1, keepdims=True)
        std = np.sqrt(((x - mu) ** 2).sum(axis=1, keepdims=True) / (x.shape[1] - 1))  # torch.std: unbiased
        return (x - mu) / (std + 1e-5), lambda y: y * std + mu
    if mode == "expected_average_only_in" and scale:
        return x * scale, lambda y: y / scale
    return x, lambda y: y


def reference(x, w, architecture, normalize, scale=None, center=False, apply_b_dec=True, k=K):
    """(latents, reconstruction) of the rows of x in float64."""
    w = {name: a.astype(np.float64) for name, a in w.items()}
    x = x.astype(np.float64)
    if center:
        x = x - x.mean(axis=1, keepdims=True)
    x, undo = reference_normalize(x, normalize, scale)
    pre = (x - w["b_dec"] * apply_b_dec) @ w["W_enc"] + w["b_enc"]
    acts = np.maximum(pre, 0.0)
    if architecture == "jumprelu":
        acts = acts * (pre > w["threshold"])
    if architecture == "topk":
        keep = np.zeros_like(pre, dtype=bool)
        for row, order in enumerate(np.argsort(-pre, axis=1)):
            keep[row, order[:k]] = True
        acts = acts * keep
    return acts, undo(acts @ w["W_dec"] + w["b_dec"])


def folder_settings(architecture: str, normalize: str) -> dict:
    extra = {"norm_scaling_factor": SCALE} if normalize == "expected_average_only_in" else {}
    return dict(k=K if architecture == "topk" else None, normalize=normalize, **extra)


@pytest.mark.parametrize("normalize", NORMALIZATIONS)
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_encode_and_decode_follow_the_formulas(tiny_gpt2_model, tmp_path, architecture, normalize):
    w = write_sae(tmp_path, D_IN, D_SAE, architecture, HOOK, **folder_settings(architecture, normalize))
    sae = load_sae(str(tmp_path), tiny_gpt2_model, center=False).sae
    x = inputs()
    acts, rows = sae.encode_rows(x)
    want_acts, want_x = reference(x, w, architecture, normalize, SCALE)
    assert ((acts > 0) == (want_acts > 0)).all()  # the same latents fire
    np.testing.assert_allclose(acts, want_acts, atol=ATOL, rtol=0)
    np.testing.assert_allclose(sae.decode(acts, rows), want_x, atol=ATOL, rtol=0)
    np.testing.assert_allclose(sae.reconstruct(x), want_x, atol=ATOL, rtol=0)
    assert (architecture != "topk") or ((acts > 0).sum(axis=1) <= K).all()


def test_expected_average_without_a_factor_encodes_as_none_and_says_so(tiny_gpt2_model, tmp_path):
    w = write_sae(tmp_path, D_IN, D_SAE, "standard", HOOK, normalize="expected_average_only_in")
    notes = []
    sae = load_sae(str(tmp_path), tiny_gpt2_model, center=False, on_notice=notes.append).sae
    np.testing.assert_allclose(sae.encode(inputs()), reference(inputs(), w, "standard", "none")[0], atol=ATOL, rtol=0)
    assert len(notes) == 1 and "gives no norm_scaling_factor" in notes[0]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_without_b_dec_on_the_input(tiny_gpt2_model, tmp_path, architecture):
    settings = folder_settings(architecture, "none")
    w = write_sae(tmp_path, D_IN, D_SAE, architecture, HOOK, apply_b_dec_to_input=False, **settings)
    sae = load_sae(str(tmp_path), tiny_gpt2_model, center=False).sae
    np.testing.assert_allclose(sae.encode(inputs()), reference(inputs(), w, architecture, "none", apply_b_dec=False)[0],
                               atol=ATOL, rtol=0)


@pytest.mark.parametrize("normalize", ["none", "expected_average_only_in"])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_configs_from_before_saelens_6_load_the_same_sae(tiny_gpt2_model, tmp_path, architecture, normalize):
    """hook_point, activation_fn_str (topk: its activation_fn_kwargs' k), normalize_activations as a flag."""
    settings = folder_settings(architecture, normalize)
    write_sae(tmp_path / "new", D_IN, D_SAE, architecture, HOOK, **settings)
    write_sae(tmp_path / "old", D_IN, D_SAE, architecture, HOOK, style="old", **settings)
    new, old = (load_sae(str(tmp_path / name), tiny_gpt2_model, center=False) for name in ("new", "old"))
    assert (old.site, old.layer, old.sae.architecture, old.sae.k, old.sae.normalize, old.sae.scale) == \
        (new.site, new.layer, new.sae.architecture, new.sae.k, new.sae.normalize, new.sae.scale) == \
        ("blocks.1.resid_pre", 1, architecture, settings["k"], normalize, SCALE if settings.get("norm_scaling_factor")
         else None)
    np.testing.assert_array_equal(old.sae.encode(inputs()), new.sae.encode(inputs()))


@pytest.mark.parametrize("normalize", ["none", "constant_norm_rescale"])
def test_center_removes_each_rows_mean_before_everything_else(normalize):
    w = random_weights(D_IN, D_SAE)
    fields = dict(w_enc=w["W_enc"], w_dec=w["W_dec"], b_enc=w["b_enc"], b_dec=w["b_dec"], architecture="standard",
                  hook=HOOK, normalize=normalize)
    centred = SparseAutoencoder(**fields, center=True)
    x = inputs()
    np.testing.assert_allclose(centred.encode(x), reference(x, w, "standard", normalize, center=True)[0],
                               atol=ATOL, rtol=0)
    assert np.abs(centred.encode(x) - SparseAutoencoder(**fields).encode(x)).max() > 1e-2  # it changes something


def test_center_changes_nothing_after_a_layer_norm_which_removes_the_mean_itself():
    w = random_weights(D_IN, D_SAE)
    fields = dict(w_enc=w["W_enc"], w_dec=w["W_dec"], b_enc=w["b_enc"], b_dec=w["b_dec"], architecture="standard",
                  hook=HOOK, normalize="layer_norm")
    x = inputs()
    np.testing.assert_allclose(SparseAutoencoder(**fields, center=True).encode(x),
                               SparseAutoencoder(**fields).encode(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("extra, centred", [
    ({}, True),  # SAELens before it recorded the model's settings (jbloom's GPT-2 set): TransformerLens' default
    ({"model_from_pretrained_kwargs": {"center_writing_weights": True}}, True),
    ({"model_from_pretrained_kwargs": {"center_writing_weights": False}}, False),  # SAELens' default since 2024
    ({"model_from_pretrained_kwargs": {}}, True),
    ({"model_class_name": "AutoModelForCausalLM"}, False),  # a Hugging Face model: its stream as it is
    ({"metadata": {"hook_name": HOOK, "llmx": {"layer": 1}}}, False),  # trained by llmx
])
def test_center_follows_the_config_on_layernorm_models(tiny_gpt2_model, tmp_path, extra, centred):
    write_sae(tmp_path, D_IN, D_SAE, "standard", HOOK, **extra)
    notes = []
    assert load_sae(str(tmp_path), tiny_gpt2_model, on_notice=notes.append).sae.center is centred
    assert bool(notes) is centred  # a note says so when llmx decided to centre
    assert load_sae(str(tmp_path), tiny_gpt2_model, center=not centred).sae.center is not centred


@pytest.mark.parametrize("extra, prepend", [({}, True), ({"prepend_bos": False}, False),
                                            ({"metadata": {"hook_name": HOOK, "llmx": {}}}, False),
                                            ({"metadata": {"hook_name": HOOK, "llmx": {}, "prepend_bos": True}}, True)])
def test_a_start_token_unless_the_config_says_otherwise_or_llmx_trained_it(tiny_gpt2_model, tmp_path, extra, prepend):
    write_sae(tmp_path, D_IN, D_SAE, "standard", HOOK, **extra)
    assert load_sae(str(tmp_path), tiny_gpt2_model).prepend_bos is prepend


def test_rmsnorm_models_are_never_centred(tmp_path, tiny_llama):
    from llmx.engine import load

    llama = load(str(tiny_llama))
    write_sae(tmp_path, 64, D_SAE, "standard", "blocks.0.hook_resid_post")
    assert load_sae(str(tmp_path), llama).sae.center is False


@pytest.mark.parametrize("hook, site", [
    ("blocks.8.hook_resid_pre", "blocks.8.resid_pre"), ("blocks.0.hook_resid_mid", "blocks.0.resid_mid"),
    ("blocks.11.hook_resid_post", "blocks.11.resid_post"), ("blocks.3.hook_attn_out", "blocks.3.attn_out"),
    ("blocks.3.hook_mlp_out", "blocks.3.mlp_out"), ("blocks.2.mlp.hook_post", "blocks.2.mlp.post"),
    ("blocks.2.attn.hook_z", "blocks.2.attn.z"), ("blocks.5.resid_post", "blocks.5.resid_post"),
])
def test_transformerlens_hook_names_map_onto_llmx(hook, site):
    assert llmx_site(hook) == (site, int(site.split(".")[1]))


@pytest.mark.parametrize("hook, width", [("blocks.0.mlp.hook_post", 256), ("blocks.0.attn.hook_z", 64),
                                         ("blocks.1.hook_mlp_out", 64)])
def test_other_hooks_read_and_encode_their_own_width(tiny_gpt2_model, tmp_path, hook, width):
    from llmx.engine.sae import activations

    w = write_sae(tmp_path, width, D_SAE, "standard", hook)
    loaded = load_sae(str(tmp_path), tiny_gpt2_model)
    ids = [39, 724, 78]
    acts = activations(tiny_gpt2_model, loaded, ids)
    assert acts.shape == (3, D_SAE) and loaded.sae.center is (hook == "blocks.1.hook_mlp_out")
    assert loaded.on_stream is (hook == "blocks.1.hook_mlp_out")
    assert w["W_enc"].shape == (width, D_SAE)


@pytest.mark.parametrize("change, message", [
    (dict(architecture="gated"), "architecture is gated; llmx runs standard, topk, jumprelu"),
    (dict(style="old", activation_fn_str="tanh-relu"), "standard with activation 'tanh-relu'"),
    (dict(hook="blocks.1.ln1.hook_normalized"), "reads hook 'blocks.1.ln1.hook_normalized', which llmx does not"),
    (dict(hook="blocks.7.hook_resid_pre"), "has blocks 0..1: is it made for another model?"),
    (dict(d_in=48), "width 48 at blocks.1.resid_pre, but"),
    (dict(architecture="topk"), "a topk SAE needs a whole k >= 1"),
    (dict(normalize="rms"), "normalize_activations 'rms' is not one llmx knows"),
    (dict(hook_head_index=3), "reads one attention head"),
])
def test_unsupported_saes_are_one_clear_error(tiny_gpt2_model, tmp_path, change, message):
    settings = dict(d_in=D_IN, d_sae=D_SAE, architecture="standard", hook=HOOK)
    settings.update(change)
    write_sae(tmp_path, **settings)
    with pytest.raises(SaeError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        load_sae(str(tmp_path), tiny_gpt2_model)


def test_damaged_folders_are_one_clear_error(tiny_gpt2_model, tmp_path):
    from safetensors.numpy import save_file

    with pytest.raises(SaeError, match="has no cfg.json: give a folder in SAELens' format"):
        load_sae(str(tmp_path), tiny_gpt2_model)
    w = write_sae(tmp_path, D_IN, D_SAE, "standard", HOOK)
    save_file({name: a for name, a in w.items() if name != "W_dec"}, str(tmp_path / "sae_weights.safetensors"))
    with pytest.raises(SaeError, match="has no tensor 'W_dec'"):
        load_sae(str(tmp_path), tiny_gpt2_model)
    save_file({**w, "b_dec": w["b_dec"][:10]}, str(tmp_path / "sae_weights.safetensors"))
    with pytest.raises(SaeError, match=r"tensor 'b_dec' has shape \[10\], expected \[64\]"):
        load_sae(str(tmp_path), tiny_gpt2_model)
    (tmp_path / "cfg.json").write_text("[1, 2]")
    with pytest.raises(SaeError, match="is not a JSON object"):
        load_sae(str(tmp_path), tiny_gpt2_model)


LOCATE = """
import sys
from llmx.engine import LlmxError
from llmx.engine.sae import locate_sae
try:
    print(locate_sae(sys.argv[1]))
except LlmxError as e:
    sys.exit(f"{type(e).__name__}: {e}")
"""


def locate_on_hub(ref: str, hf_home, endpoint: str) -> subprocess.CompletedProcess:
    """locate_sae(ref) in a fresh interpreter (huggingface_hub reads HF_ENDPOINT when imported)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_")) and "proxy" not in k.lower()}
    clean.update(HF_HOME=str(hf_home), HF_ENDPOINT=endpoint, NO_PROXY="127.0.0.1")
    return subprocess.run([sys.executable, "-c", LOCATE, ref], env=clean, capture_output=True, text=True, timeout=60)


def test_an_sae_in_a_hub_subfolder_is_downloaded_once(tmp_path):
    from hub_server import HubServer

    repo = tmp_path / "repo"
    write_sae(repo / "blocks.1.hook_resid_pre", D_IN, D_SAE, "standard", HOOK, sparsity=True)
    write_sae(repo / "blocks.0.hook_resid_pre", D_IN, D_SAE, "standard", "blocks.0.hook_resid_pre")
    with HubServer() as hub:
        hub.add_repo("someone/saes", repo)
        first = locate_on_hub("someone/saes/blocks.1.hook_resid_pre", tmp_path / "hf", hub.url)
        assert first.returncode == 0, first.stderr
        got = hub.files_got()
        assert sorted(got) == [f"blocks.1.hook_resid_pre/{name}" for name in
                               ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors")]
        again = locate_on_hub("someone/saes/blocks.1.hook_resid_pre", tmp_path / "hf", hub.url)
        assert again.stdout == first.stdout and hub.files_got() == got  # from the cache, nothing fetched again
        missing = locate_on_hub("someone/saes/blocks.9.hook_resid_pre", tmp_path / "hf", hub.url)
    folder = first.stdout.strip()
    assert folder.endswith(f"models--someone--saes/snapshots/{hub.commit('someone/saes')}/blocks.1.hook_resid_pre")
    assert sorted(os.listdir(folder)) == ["cfg.json", "sae_weights.safetensors", "sparsity.safetensors"]
    assert missing.returncode == 1 and "has no blocks.9.hook_resid_pre/cfg.json" in missing.stderr
