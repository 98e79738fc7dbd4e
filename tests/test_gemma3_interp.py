"""The "why" analyses and the SAE commands on Gemma 3: a tiny random Gemma3ForCausalLM (test_gemma3_hf.py's
TINY: 7 blocks, block 5 global, the others local with a 4-position window; sandwich norms, normalized queries
and keys, scaled embeddings) with GPT-2's vocabulary, so that it loads in a second; transformers in float64
is the reference for attribution through the post-norms."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from conftest import write_random_gemma3, write_tokenizer_json
from test_gemma3_hf import TINY


def write_tiny_gemma3(directory: Path, vocab: Path, seed: int = 0) -> Path:
    """test_gemma3_hf.py's tiny Gemma 3 (random weights: embeddings N(0, 1), matrices N(0, 0.2), norm weights
    on a 2**-10 grid, so that llmx's 1 + w is exact in float32) over GPT-2's 50257 tokens, with a tokenizer.json that starts each text with
    <|endoftext|> (Gemma's texts start with <bos>)."""
    settings = {**TINY, "vocab_size": 50257, "bos_token_id": 50256, "eos_token_id": 50256, "pad_token_id": 50256}
    write_random_gemma3(directory, settings, seed)
    write_tokenizer_json(directory, vocab, bos_template=True)
    return directory


@pytest.fixture(scope="session")
def tiny_gemma3(tmp_path_factory, gpt2_vocab) -> Path:
    return write_tiny_gemma3(tmp_path_factory.mktemp("tiny-gemma3-gpt2-vocab"), gpt2_vocab)


def load_tiny_gemma3(directory: Path):
    """The folder's Gemma 3 weights read by llmx's gemma3 architecture, with the GPT-2 tokenizer beside them
    (llmx reads Gemma's own tokenizer only in its SentencePiece form, which test_gemma3_hf.py tests)."""
    from llmx.engine.arch import llama
    from llmx.engine.arch.common import TensorSource
    from llmx.engine.formats.hf import read_tensors
    from llmx.engine.lm import LanguageModel
    from llmx.engine.loader import hf_config

    arch, config = hf_config(directory)
    tensors, origin = read_tensors(directory)
    weights = arch.weights_from_hf(TensorSource(tensors, origin, arch.TITLE), config)
    return LanguageModel(name="tiny-gemma3", path=directory, config=config, weights=weights,
                         tokenizer=llama.tokenizer(directory, config.n_vocab))


@pytest.fixture(scope="session")
def gemma(tiny_gemma3):
    return load_tiny_gemma3(tiny_gemma3)


@pytest.fixture(scope="session")
def reference64(tiny_gemma3):
    """transformers' Gemma 3 on the same folder, in float64 (tests/float64.py)."""
    import float64
    from transformers import Gemma3ForCausalLM

    return float64.transformers_float64(Gemma3ForCausalLM.from_pretrained(tiny_gemma3, dtype="float32").eval())


def run_reference(ref, ids, hooks) -> "torch.Tensor":
    """The reference's logits [n_seq, n_vocab] for `ids`, with PyTorch hooks [(module, kind, fn)] on for the pass."""
    import torch

    handles = [getattr(module, f"register_forward_{kind}")(fn) for module, kind, fn in hooks]
    try:
        with torch.no_grad():
            return ref(torch.tensor([ids])).logits[0]
    finally:
        for handle in handles:
            handle.remove()


CLEAN = "When Mary and John went to the store, John gave a drink to"


def test_a_head_and_the_embedding_are_what_transformers_writes_through_the_frozen_norms(gemma, reference64):
    """The reference: head 2 of block 5 (the global layer) from the input of transformers' o_proj through its
    columns, then post_attention_layernorm with its scale frozen at the value for the whole attention output,
    then the final norm's frozen scale; the embedding times sqrt(n_embd). Both computed in float64 from
    independently written passes: they agree to float64 rounding (1e-9 relative leaves a margin of ~1e5)."""
    import float64
    import torch

    from llmx.engine.interp import attribute, parse_token

    lm64 = float64.llmx_float64(gemma)
    ids = lm64.prompt_ids(CLEAN)
    layer, head, d = 5, 2, gemma.config.d_head
    block, seen = reference64.model.layers[layer], {}
    logits = run_reference(reference64, ids, [
        (block.self_attn.o_proj, "pre_hook", lambda m, args: seen.update(z=args[0][0, -1])),
        (block.post_attention_layernorm, "pre_hook", lambda m, args: seen.update(attn=args[0][0, -1])),
        (reference64.model.norm, "pre_hook", lambda m, args: seen.update(stream=args[0][0, -1]))])

    def frozen(x, c, norm):  # Gemma's RMSNorm, x / rms(x) * (1 + w), with x's scale applied to c
        return c / torch.sqrt((x * x).mean() + norm.eps) * (1 + norm.weight)

    result = seen["z"][head * d:(head + 1) * d] @ block.self_attn.o_proj.weight[:, head * d:(head + 1) * d].T
    u = reference64.lm_head.weight[5335] - reference64.lm_head.weight[1757]  # " Mary" - " John"
    expected_head = frozen(seen["stream"], frozen(seen["attn"], result, block.post_attention_layernorm),
                           reference64.model.norm) @ u
    embedded = reference64.model.embed_tokens(torch.tensor([ids[-1]]))[0]  # scaled by sqrt(n_embd) inside
    expected_embed = frozen(seen["stream"], embedded, reference64.model.norm) @ u
    a = attribute(lm64, ids, parse_token(lm64, " Mary"), parse_token(lm64, " John"))
    values = {c.name: c.value for c in a.components}
    assert values[f"L{layer}.H{head}"] == pytest.approx(float(expected_head.detach()), rel=1e-9)
    assert values["embed"] == pytest.approx(float(expected_embed.detach()), rel=1e-9)
    assert a.total == pytest.approx(float(logits[-1, 5335] - logits[-1, 1757]), rel=1e-9)
    assert abs(float(expected_head.detach())) > 1e-3 and abs(float(expected_embed.detach())) > 1e-3  # not a comparison of zeros


def test_an_ablated_head_is_removed_before_its_post_norm_as_in_transformers(gemma, reference64):
    """Zero-ablating head 1 of block 2 equals transformers with that head's slice of o_proj's input zeroed: the
    head leaves the sum the post-norm then normalizes (float64 both; 1e-9 absolute on logits of ~30)."""
    import float64

    from llmx.engine.interp import ablated, parse_ablation

    lm64 = float64.llmx_float64(gemma)
    ids = lm64.prompt_ids(CLEAN)
    d = gemma.config.d_head

    def zero_head(module, args):
        z = args[0].clone()
        z[..., d:2 * d] = 0
        return (z,)

    expected = run_reference(reference64, ids, [(reference64.model.layers[2].self_attn.o_proj, "pre_hook", zero_head)])
    logits, _ = ablated(lm64, parse_ablation("2.1"), "zero").forward(ids, all_logits=True)
    np.testing.assert_allclose(logits, expected.numpy(), rtol=0, atol=1e-9)
    assert np.abs(logits - lm64.forward(ids, all_logits=True)[0]).max() > 1e-3


# The commands, in-process through main() (tests/test_cli.py's `run`), with their model loading replaced by the
# tiny Gemma (llmx's loader would read Gemma's SentencePiece tokenizer only).

@pytest.fixture
def m(gemma, tiny_gemma3, monkeypatch):
    from llmx.commands import core, features, inspect, sae, score, why

    for module in (core, features, inspect, sae, score, why):
        monkeypatch.setattr(module, "load_model", lambda name: gemma)
    return ["-m", str(tiny_gemma3)]


def test_attribute_patch_and_ablate_run_on_gemma(m, gemma):
    import json

    from test_cli import run

    corrupt = "When Mary and John went to the store, Mary gave a drink to"
    r = run("attribute", *m, CLEAN, "--target", " Mary", "--foil", " John", "--json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    names = [c["name"] for c in data["components"]]
    assert names[:2] == ["embed", "L0.H0"] and names[-1] == "L6.mlp"  # no position embedding, bias or shift
    assert abs(sum(c["value"] for c in data["components"]) - data["total"]) <= 1e-4 * abs(data["total"])
    assert "post-norms" in run("attribute", *m, CLEAN, "--target", " Mary").stdout
    r = run("patch", *m, CLEAN, corrupt, "--target", " Mary", "--foil", " John", "--json")
    assert r.exit_code == 0, r.stderr
    patched = json.loads(r.stdout)
    assert len(patched["heads"]) == 7 and patched["resid_pre"][0][10] == pytest.approx(1, abs=1e-4)
    plain = json.loads(run("predict", *m, CLEAN, "--json").stdout)
    knocked = json.loads(run("predict", *m, CLEAN, "--ablate", "5.0,5.1,5.2,5.3", "--json").stdout)
    assert knocked != plain


@pytest.fixture
def trained(m, tmp_path):
    """A tiny TopK SAE (32 latents, k 4) trained by `llmx sae train` on the stream after block 3 (local;
    windows of 16 tokens, longer than the 4-token sliding window), and its metrics."""
    import json

    from test_cli import run
    from test_sae_train import TEXT

    (tmp_path / "a.txt").write_text(TEXT * 6, encoding="utf-8")
    out = tmp_path / "sae"
    r = run("sae", "train", *m, "--layer", "3", "--data", str(tmp_path / "a.txt"), "--out", str(out), "--window",
            "16", "--latents", "32", "--k", "4", "--epochs", "2", "--batch", "64", "--json")
    assert r.exit_code == 0, r.stderr
    return out, json.loads(r.stdout)


def test_sae_train_reads_windows_that_begin_with_the_start_token(trained):
    import json

    out, metrics = trained
    assert 0 < metrics["l0"] <= 4 and metrics["tokens"] > 0  # (CE: a random model's, ~29 nats, nothing to check)
    ids = np.load(out / "activations" / "ids.npy")
    assert ids.shape[1] == 16 and (ids[:, 0] == 50256).all() and (ids[:, 1:] != 50256).all()  # <bos>, then text
    assert json.loads((out / "cfg.json").read_text())["metadata"]["prepend_bos"] is True


def test_features_feature_and_steer_on_gemma(m, gemma, trained):
    import json

    from llmx.engine.packed import column_major
    from llmx.engine.formats.safetensors import read_safetensors
    from llmx.engine.hooks import Hooks, Trace
    from llmx.engine.sae.explore import output_tokens
    from test_cli import run

    out, _ = trained
    w = read_safetensors(out / "sae_weights.safetensors")
    ids = gemma.prompt_ids(CLEAN)
    trace = Trace(("blocks.3.resid_post",))
    gemma.forward(ids, hooks=trace)
    pre = (trace["blocks.3.resid_post"].astype(np.float64) - w["b_dec"]) @ w["W_enc"].astype(np.float64) + w["b_enc"]
    data = json.loads(run("features", *m, CLEAN, "--sae", str(out), "--top", "2", "--json").stdout)
    assert [t["id"] for t in data["tokens"]] == ids and data["tokens"][0]["features"] == []
    for token, row in zip(data["tokens"][1:], pre[1:]):
        assert [f["id"] for f in token["features"]] == [int(i) for i in np.argsort(-row)[:2] if row[i] > 0]
    live = int(np.argmax(read_safetensors(out / "sparsity.safetensors")["sparsity"]))  # the densest latent
    card = json.loads(run("feature", str(live), *m, "--sae", str(out), "--top", "3", "--json").stdout)
    g = gemma.weights.ln_final.g.astype(np.float64)  # Gemma's 1 + w
    logits = gemma.weights.unembed.astype(np.float64) @ (w["W_dec"][live].astype(np.float64) * g)
    assert [t["id"] for t in card["positive"]] == [int(i) for i in np.argsort(-logits)[:3]]
    assert card["contexts"] and card["source"] == "index"
    text = (out.parent / "a.txt").read_text()
    scanned = json.loads(run("feature", str(live), *m, "--sae", str(out), "--data", str(out.parent / "a.txt"),
                             "--json").stdout)  # chunks after <bos>, as Gemma reads text; position 0 left out
    assert scanned["tokens"] == len(gemma.tokenizer.encode(text)) - 1 and scanned["contexts"]
    assert all(c["tokens"][0] != "<|endoftext|>" for c in scanned["contexts"])
    tied = dataclasses.replace(gemma, weights=column_major(gemma.weights))  # a GGUF file's tied embedding's layout
    assert tied.weights.unembed.flags.f_contiguous
    for mine, rows in zip(output_tokens(tied, w["W_dec"][live], 3), output_tokens(gemma, w["W_dec"][live], 3)):
        assert [t.id for t in mine] == [t.id for t in rows]  # values: the same sums in another order
        # float32 dot products of 32 terms (values ~30) summed in another order: ~1e-6 relative apart
        np.testing.assert_allclose([t.value for t in mine], [t.value for t in rows], rtol=1e-5)
    r = run("steer", *m, "I went to the", "--sae", str(out), "--feature", str(live), "--coef", "40",
            "--max-tokens", "6", "--json")
    assert r.exit_code == 0, r.stderr
    steered = json.loads(r.stdout)["steered"]["ids"]
    vector = np.float32(40) * w["W_dec"][live]
    hooks = Hooks([("blocks.3.resid_post", lambda value, site: value + vector)])
    assert steered == gemma.complete(gemma.prompt_ids("I went to the"), 6, seed=0, hooks=hooks).ids
