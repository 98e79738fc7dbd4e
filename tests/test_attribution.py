"""Direct logit attribution, activation patching and ablation on GPT-2-shaped, Llama-shaped, Gemma 3 and GGUF models:
the exact sum, the patching identities, transformers (with PyTorch forward hooks) as the reference, and
ablation against the same edit made to the weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import float64
from llmx.engine import InputError, LlmxError, load
from llmx.engine.interp import ablated, accumulated, attribute, parse_ablation, parse_token, patch
from llmx.engine.model import Linear
from test_gemma3_interp import load_tiny_gemma3, write_tiny_gemma3
from test_gguf import gpt2_gguf_tensors, gpt2_tokenizer_metadata, write_gguf, write_tiny_llama_gguf
from test_hooks import with_block
from test_inspect import tiny_llama

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"  # differs at position 9 only
DIFFERENT_AT = 9
# The float32 sum of the terms against the real float32 logit: both come from the same float32 activations; they
# differ only by the rounding of the pass's last steps (the stream's additions, the final norm, one dot product
# of n_embd terms), each ~n * 2**-24 ~ 1e-6 of the values involved, so 1e-4 relative leaves a margin of ~100.
FLOAT32_RELATIVE = 1e-4
FLOAT64_RELATIVE = 1e-10  # the same in float64: 2**-29 of the float32 rounding, with a wide margin


@pytest.fixture(scope="module", params=["gpt2", "llama", "gpt2-gguf", "llama-gguf", "gemma3"])
def lm(request, tiny_gpt2_model, tiny_gpt2, gpt2_vocab, tmp_path_factory):
    if request.param == "gpt2":
        return tiny_gpt2_model
    if request.param == "llama":
        return tiny_llama(tiny_gpt2_model)
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "gemma3":  # sandwich norms, scaled embeddings; CLEAN is longer than its 4-token window
        return load_tiny_gemma3(write_tiny_gemma3(folder, gpt2_vocab))
    if request.param == "gpt2-gguf":
        meta = {"gpt2.context_length": 64, "gpt2.embedding_length": 64, "gpt2.feed_forward_length": 256,
                "gpt2.block_count": 2, "gpt2.attention.head_count": 4, "gpt2.attention.layer_norm_epsilon": 1e-5,
                **gpt2_tokenizer_metadata(gpt2_vocab)}
        return load(str(write_gguf(folder / "gpt2.gguf", "gpt2", meta, gpt2_gguf_tensors(tiny_gpt2, np.float32))))
    from conftest import write_tiny_llama

    hf = write_tiny_llama(folder / "hf", gpt2_vocab, tied=False)
    return load(str(write_tiny_llama_gguf(folder / "llama.gguf", hf, gpt2_vocab)))


@pytest.fixture(scope="module")
def lm64(lm):
    return float64.llmx_float64(lm)


def top_token(lm, ids):
    return parse_token(lm, f"#{lm.predict(ids, 1)[0].id}")


def test_the_terms_add_up_to_the_real_logit(lm):
    ids = lm.prompt_ids(CLEAN)
    target = top_token(lm, ids)  # the largest logit: far from 0, so a relative bound means something
    a = attribute(lm, ids, target)
    logits, _ = lm.forward(ids)
    assert a.total == float(logits[target.id])
    assert abs(sum(c.value for c in a.components) - a.total) <= FLOAT32_RELATIVE * abs(a.total)
    assert accumulated(a, lm.config.n_layer)[-1] == pytest.approx(a.total, rel=FLOAT32_RELATIVE)


def test_the_terms_add_up_to_the_logit_difference_in_float64(lm64):
    ids = lm64.prompt_ids(CLEAN)
    a = attribute(lm64, ids, parse_token(lm64, " Mary"), parse_token(lm64, " John"), position=-1)
    scale = sum(abs(c.value) for c in a.components)
    assert abs(sum(c.value for c in a.components) - a.total) <= FLOAT64_RELATIVE * scale
    assert a.foil.token == " John" and a.position == len(ids) - 1


def test_components_are_the_models_parts(lm):
    ids = lm.prompt_ids("Hullo, my name is")
    a = attribute(lm, ids, parse_token(lm, " is"), position=len(ids) - 2)  # 5, or 6 after a start token
    names = [c.name for c in a.components]
    cfg = lm.config
    heads = [f"L{layer}.H{h}" for layer in range(cfg.n_layer) for h in range(cfg.n_head)]
    assert [n for n in names if n.startswith("L") and ".H" in n] == heads
    assert [n for n in names if n.endswith(".mlp")] == [f"L{layer}.mlp" for layer in range(cfg.n_layer)]
    learned = cfg.positions == "learned"
    assert ("pos_embed" in names) == learned and ("norm" in names) == (cfg.norm == "layernorm")
    assert ("bias" in names) == (lm.weights.blocks[0].w_o.b is not None)
    assert a.position == len(ids) - 2 and a.prompt_tokens[a.position] == " name"


def test_a_component_is_what_that_head_writes_through_the_frozen_norm(tiny_gpt2_reference, tiny_gpt2_model):
    """The reference: transformers' GPT-2 in float64, one head's output taken from the input of c_proj (a
    PyTorch forward pre-hook) through its rows of c_proj, the final LayerNorm's scale from the stream before it."""
    import torch

    ref = float64.transformers_float64(tiny_gpt2_reference)
    lm64 = float64.llmx_float64(tiny_gpt2_model)
    ids = lm64.prompt_ids(CLEAN)
    seen = {}
    handles = [ref.transformer.h[1].attn.c_proj.register_forward_pre_hook(lambda m, args: seen.update(z=args[0])),
               ref.transformer.ln_f.register_forward_pre_hook(lambda m, args: seen.update(stream=args[0]))]
    with torch.no_grad():
        ref(torch.tensor([ids]))
    for handle in handles:
        handle.remove()
    d = 64 // 4
    head = seen["z"][0, -1, 2 * d:3 * d] @ ref.transformer.h[1].attn.c_proj.weight[2 * d:3 * d]  # head 2 of block 1
    stream = seen["stream"][0, -1]
    scale = torch.sqrt(stream.var(unbiased=False) + ref.config.layer_norm_epsilon)
    u = ref.lm_head.weight[5335] - ref.lm_head.weight[1757]  # " Mary" - " John"
    expected = float((((head - head.mean()) / scale * ref.transformer.ln_f.weight) @ u).detach())
    a = attribute(lm64, ids, parse_token(lm64, " Mary"), parse_token(lm64, " John"))
    assert next(c.value for c in a.components if c.name == "L1.H2") == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_token_arguments(lm):
    assert parse_token(lm, "#5335").token == " Mary"
    with pytest.raises(InputError, match=r"' Mary Ann' is 2 tokens, not one: ' Mary' \(5335\), ' Ann' \(5506\); "
                                         r"give one of them, or its id as #ID"):
        parse_token(lm, " Mary Ann")
    with pytest.raises(InputError, match="outside this model's vocabulary"):
        parse_token(lm, "#99999999")
    with pytest.raises(InputError, match="the same token"):
        attribute(lm, [1, 2], parse_token(lm, " Mary"), parse_token(lm, "#5335"))


def test_patching_the_one_different_position_at_block_0_restores_everything(lm64):
    clean, corrupt = lm64.prompt_ids(CLEAN), lm64.prompt_ids(CORRUPT)
    p = DIFFERENT_AT + (len(clean) - 14)  # after a start token, where the model puts one
    assert [i for i, (a, b) in enumerate(zip(clean, corrupt)) if a != b] == [p]
    ticks = []
    r = patch(lm64, clean, corrupt, parse_token(lm64, " Mary"), parse_token(lm64, " John"),
              on_progress=lambda done, total: ticks.append((done, total)))
    total = lm64.config.n_layer * (3 * len(clean) + lm64.config.n_head)  # every site heard once, in order
    assert ticks == [(done, total) for done in range(1, total + 1)]
    # float64: the patched run is the clean run computed from position p on with the cache; ~1e-15 from it
    assert r.resid_pre[0][p] == pytest.approx(1, abs=1e-9)
    assert all(v == 0 for i, v in enumerate(r.resid_pre[0]) if i != p)
    for site in (r.resid_pre, r.attn_out, r.mlp_out):  # before p nothing differs, in any block
        assert all(row[i] == 0 for row in site for i in range(p))
    assert len(r.heads) == lm64.config.n_layer and len(r.heads[0]) == lm64.config.n_head
    assert r.clean_tokens[p] == " John" and r.corrupt_tokens[p] == " Mary"


def test_patching_needs_prompts_of_the_same_length_and_a_difference(lm):
    mary = parse_token(lm, " Mary")
    with pytest.raises(InputError) as error:
        patch(lm, lm.prompt_ids("The Eiffel Tower"), lm.prompt_ids("The Colosseum!"), mary, parse_token(lm, " John"))
    message = str(error.value)
    assert "\n" not in message and "The| E|iff|el| Tower" in message and "The| Col|os|se|um|!" in message
    ids = lm.prompt_ids(CLEAN)
    with pytest.raises(InputError, match="nothing to restore"):
        patch(lm, ids, ids, mary, parse_token(lm, " John"))


def hf_patched_lds(ref, clean, corrupt, target, foil, blocks, parts):
    """Activation patching done with transformers and PyTorch forward hooks: the same grids, independently.

    `blocks` is the model's list of blocks; `parts(block)` gives (attention module, mlp module, output projection)."""
    import torch

    def ld(hooks):
        handles = [register(fn) for register, fn in hooks]
        try:
            with torch.no_grad():
                logits = ref(torch.tensor([corrupt])).logits[0, -1]
        finally:
            for h in handles:
                h.remove()
        return float(logits[target] - logits[foil])

    recorded = {}

    def recorder(key, pre=False):
        def hook(module, args, *rest):
            value = args[0] if pre else (rest[0][0] if isinstance(rest[0], tuple) else rest[0])
            recorded[key] = value.clone()
        return hook

    hooks = []
    for i, blk in enumerate(blocks):
        attn, mlp, o_proj = parts(blk)
        hooks += [(blk.register_forward_pre_hook, recorder(("resid_pre", i), pre=True)),
                  (attn.register_forward_hook, recorder(("attn_out", i))),
                  (mlp.register_forward_hook, recorder(("mlp_out", i))),
                  (o_proj.register_forward_pre_hook, recorder(("z", i), pre=True))]
    handles = [register(fn) for register, fn in hooks]
    with torch.no_grad():
        clean_logits = ref(torch.tensor([clean])).logits[0, -1]
    for h in handles:
        h.remove()
    clean_ld, corrupt_ld = float(clean_logits[target] - clean_logits[foil]), ld([])

    def position_patch(key, p):
        def hook(module, args, *rest):
            if key[0] == "resid_pre":
                x = args[0].clone()
                x[0, p] = recorded[key][0, p]
                return (x, *args[1:])
            out = rest[0]
            first = (out[0] if isinstance(out, tuple) else out).clone()
            first[0, p] = recorded[key][0, p]
            return (first, *out[1:]) if isinstance(out, tuple) else first
        return hook

    def head_patch(i, h, d):
        def hook(module, args):
            z = args[0].clone()
            z[0, :, h * d:(h + 1) * d] = recorded[("z", i)][0, :, h * d:(h + 1) * d]
            return (z, *args[1:])
        return hook

    def scale(value):
        return (value - corrupt_ld) / (clean_ld - corrupt_ld)

    grids = {}
    for site in ("resid_pre", "attn_out", "mlp_out"):
        grid = []
        for i, blk in enumerate(blocks):
            attn, mlp, _ = parts(blk)
            register = {"resid_pre": blk.register_forward_pre_hook, "attn_out": attn.register_forward_hook,
                        "mlp_out": mlp.register_forward_hook}[site]
            grid.append([scale(ld([(register, position_patch((site, i), p))])) for p in range(len(corrupt))])
        grids[site] = grid
    n_head = ref.config.num_attention_heads
    d = ref.config.hidden_size // n_head
    grids["heads"] = [[scale(ld([(parts(blk)[2].register_forward_pre_hook, head_patch(i, h, d))]))
                       for h in range(n_head)] for i, blk in enumerate(blocks)]
    return clean_ld, corrupt_ld, grids


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_patching_matches_transformers_with_pytorch_hooks(kind, tiny_gpt2_reference, tiny_gpt2_model, tiny_llama):
    from transformers import AutoModelForCausalLM

    if kind == "gpt2":
        ref, lm = float64.transformers_float64(tiny_gpt2_reference), tiny_gpt2_model
        blocks, parts = ref.transformer.h, lambda b: (b.attn, b.mlp, b.attn.c_proj)
    else:
        ref = float64.transformers_float64(AutoModelForCausalLM.from_pretrained(tiny_llama).eval())
        lm = load(str(tiny_llama))
        blocks, parts = ref.model.layers, lambda b: (b.self_attn, b.mlp, b.self_attn.o_proj)
    lm64 = float64.llmx_float64(lm)
    clean, corrupt = lm64.prompt_ids("Hullo, my name is"), lm64.prompt_ids("Hullo, your name is")
    target, foil = parse_token(lm64, " John"), parse_token(lm64, " Mary")
    ours = patch(lm64, clean, corrupt, target, foil)
    clean_ld, corrupt_ld, grids = hf_patched_lds(ref, clean, corrupt, target.id, foil.id, blocks, parts)
    # float64 on both sides: the logit differences agree to ~1e-15; the scores divide by LD_clean - LD_corrupt
    tolerance = 1e-9 / abs(clean_ld - corrupt_ld)
    assert ours.clean_ld == pytest.approx(clean_ld, abs=1e-10) and ours.corrupt_ld == pytest.approx(corrupt_ld, abs=1e-10)
    for site, grid in grids.items():
        np.testing.assert_allclose(getattr(ours, site), grid, atol=tolerance, err_msg=site)
    assert np.abs(np.array(grids["heads"])).max() > 1e-3  # the comparison is not of zeros


def z_columns_zeroed(lm, layer: int, head: int, bias=None):
    """The model with head `head`'s columns of block `layer`'s w_o set to zero (and `bias` as its bias)."""
    w_o = lm.weights.blocks[layer].w_o
    d = lm.config.d_head
    w = w_o.w.copy()
    w[:, head * d:(head + 1) * d] = 0
    return with_block(lm, layer, w_o=Linear(w, w_o.b if bias is None else bias))


def test_zero_ablating_a_head_is_zeroing_its_slice_of_w_o_exactly(lm):
    ids = lm.prompt_ids(CLEAN)
    hooked, _ = ablated(lm, parse_ablation("1.2"), "zero").forward(ids, all_logits=True)
    edited, _ = z_columns_zeroed(lm, 1, 2).forward(ids, all_logits=True)
    np.testing.assert_array_equal(hooked, edited)  # the same products and sums: zeros times weights, or z times zeros
    assert not np.array_equal(hooked, lm.forward(ids, all_logits=True)[0])


def test_zero_ablating_an_mlp_is_zeroing_its_output_matrix_exactly(lm):
    ids = lm.prompt_ids(CLEAN)
    w_out = lm.weights.blocks[0].w_out
    edited = with_block(lm, 0, w_out=Linear(np.zeros_like(w_out.w), None if w_out.b is None else np.zeros_like(w_out.b)))
    hooked, _ = ablated(lm, parse_ablation("0.mlp"), "zero").forward(ids, all_logits=True)
    np.testing.assert_array_equal(hooked, edited.forward(ids, all_logits=True)[0])


def test_mean_ablation_is_the_head_replaced_by_its_mean_output_by_hand(lm64):
    """By hand: the head's columns of w_o zeroed and its mean output over the prompt (mean z times those columns)
    added to w_o's bias instead: the same function of the input, computed another way."""
    ids = lm64.prompt_ids(CLEAN)
    cfg, layer, head = lm64.config, 1, 3
    from llmx.engine import Trace

    trace = Trace((f"blocks.{layer}.attn.z",))
    lm64.forward(ids, hooks=trace)
    mean_z = trace[f"blocks.{layer}.attn.z"][:, head].mean(axis=0)  # [d_head]
    w_o = lm64.weights.blocks[layer].w_o
    columns = w_o.w[:, head * cfg.d_head:(head + 1) * cfg.d_head]  # [n_embd, d_head]
    bias = (0 if w_o.b is None else w_o.b) + columns @ mean_z
    by_hand, _ = z_columns_zeroed(lm64, layer, head, bias).forward(ids, all_logits=True)
    hooked, _ = ablated(lm64, parse_ablation(f"{layer}.{head}"), "mean", ids).forward(ids, all_logits=True)
    np.testing.assert_allclose(hooked, by_hand, rtol=0, atol=1e-12)
    mlp, _ = ablated(lm64, parse_ablation("0.mlp"), "mean", ids).forward(ids, all_logits=True)
    assert not np.allclose(mlp, lm64.forward(ids, all_logits=True)[0])


def test_ablation_applies_to_predict_score_and_generation(lm):
    ids = lm.prompt_ids(CLEAN)
    knocked = ablated(lm, parse_ablation("0.0,0.1,0.2,0.3,1.mlp"), "mean", ids)
    assert knocked.predict(ids, 3) != lm.predict(ids, 3)
    assert knocked.score(ids).mean_nll != lm.score(ids).mean_nll
    assert ablated(lm, (), "mean", ids) is lm
    one = knocked.complete(ids, 3, seed=0)
    assert one == knocked.complete(ids, 3, seed=0) and len(one.ids) <= 3


@pytest.mark.parametrize("spec,message", [("9", "not a head or an MLP"), ("1.x", "not a head or an MLP"),
                                          ("7.0", "layer 7 does not exist"), ("0.9", "head 9 does not exist")])
def test_ablation_refuses_what_the_model_does_not_have(lm, spec, message):
    with pytest.raises(LlmxError, match=message):
        ablated(lm, parse_ablation(spec), "zero")


def test_attribution_refuses_a_stream_it_does_not_describe(tiny_gpt2_model):
    """A model whose blocks add something the terms leave out (here a hook doubling the embeddings' row only in
    the stream) is an error, not a wrong attribution."""
    from llmx.engine.interp.ablation import with_hooks
    from llmx.engine import Hooks

    odd = with_hooks(tiny_gpt2_model, Hooks().add("blocks.1.resid_mid", lambda v, site: v * 3))
    with pytest.raises(LlmxError, match="not the sum of its embeddings"):
        attribute(odd, odd.prompt_ids(CLEAN), parse_token(odd, " Mary"))


def test_a_position_inside_the_prompt(lm):
    ids = lm.prompt_ids("Hullo, my name is")
    a = attribute(lm, ids, parse_token(lm, " name"), position=-3)
    logits, _ = lm.forward(ids, all_logits=True)
    assert a.position == len(ids) - 3 and a.total == float(logits[-3, a.target.id])
    with pytest.raises(InputError, match="outside the text"):
        attribute(lm, ids, parse_token(lm, " name"), position=len(ids))
    assert dataclasses.asdict(a)["target"] == {"id": a.target.id, "token": " name"}
