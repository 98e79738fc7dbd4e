"""The NumPy backward pass against PyTorch autograd on the same tiny checkpoints, parameter by parameter."""

from __future__ import annotations

import numpy as np
import pytest

import float64
from llmx.engine import load
from llmx.engine.train import layers as L
from llmx.engine.train.hfnames import hf_tensors
from llmx.engine.train.net import train_backward, train_forward
from llmx.engine.train.params import to_params

BATCH, N_SEQ = 2, 12


def batch(n_vocab: int, seed: int = 0):
    """ids, targets (the next tokens) and a loss mask with the first three positions of row 0 left out."""
    tokens = np.random.default_rng(seed).integers(0, n_vocab, (BATCH, N_SEQ + 1))
    mask = np.ones((BATCH, N_SEQ), np.int64)
    mask[0, :3] = 0
    return tokens[:, :-1], tokens[:, 1:], mask


def torch_grads(reference, ids, targets, mask) -> tuple[float, dict]:
    """transformers' loss (mean over unmasked positions) and each parameter's gradient, by checkpoint name
    (a tied matrix once, under the embedding's name)."""
    import torch

    reference.zero_grad()
    logits = reference(torch.tensor(ids)).logits
    labels = torch.tensor(np.where(mask == 1, targets, -100))
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    loss.backward()
    return loss.item(), {name: p.grad.numpy() for name, p in reference.named_parameters()}


def llmx_grads(model, dtype, ids, targets, mask) -> tuple[float, dict]:
    params = to_params(model.weights, dtype)
    loss, tape = train_forward(params, model.config, ids, targets, mask, trainable=set(params))
    grads = train_backward(tape, params, model.config, trainable=set(params))
    assert set(grads) == set(params)
    return loss, hf_tensors(grads, model.config)


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference relative to the gradient's largest entry (a tensor's scale, not each entry's)."""
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def reference_for(path):
    from transformers import AutoModelForCausalLM

    return float64.transformers_float64(AutoModelForCausalLM.from_pretrained(path, dtype="float32"))


@pytest.fixture(params=["gpt2", "llama"])
def checkpoint(request, tiny_gpt2, tiny_llama):
    return tiny_gpt2 if request.param == "gpt2" else tiny_llama


def test_every_gradient_equals_autograd_in_float64(checkpoint):
    model = load(str(checkpoint))
    ids, targets, mask = batch(model.config.n_vocab)
    expected_loss, expected = torch_grads(reference_for(checkpoint), ids, targets, mask)
    loss, grads = llmx_grads(model, np.float64, ids, targets, mask)
    assert abs(loss - expected_loss) < 1e-12
    assert set(grads) == set(expected)
    for name, g in grads.items():
        assert relative_error(g, expected[name]) < 1e-10, name


def test_float32_gradients_are_within_rounding_of_float64(checkpoint):
    """float32 against llmx's own float64: each gradient is a few dozen float32 operations deep, each sum of at
    most ~50k terms (the vocabulary, in the unembedding's) on values of order one; relative to a tensor's largest
    entry the rounding stays ~sqrt(depth * n) * 2**-24 ~ 1e-4. Measured: below 2e-5."""
    model = load(str(checkpoint))
    assert_float32_within(model, *batch(model.config.n_vocab, seed=1), loss_bound=1e-5, grad_bound=1e-4)


def assert_float32_within(model, ids, targets, mask, loss_bound: float, grad_bound: float) -> None:
    """llmx's float32 loss and gradients against its float64 ones: the loss within loss_bound, every gradient
    float32 and within grad_bound relative to its tensor's largest entry (the bounds argued by each caller)."""
    exact_loss, exact = llmx_grads(model, np.float64, ids, targets, mask)
    loss, grads = llmx_grads(model, np.float32, ids, targets, mask)
    assert abs(loss - exact_loss) < loss_bound
    for name, g in grads.items():
        assert g.dtype == np.float32
        assert relative_error(g, exact[name]) < grad_bound, name


def test_finite_differences_agree_with_a_few_entries(tiny_llama):
    model = load(str(tiny_llama))
    ids, targets, mask = batch(model.config.n_vocab, seed=2)
    params = to_params(model.weights, np.float64)
    _, tape = train_forward(params, model.config, ids, targets, mask, trainable=set(params))
    grads = train_backward(tape, params, model.config, trainable=set(params))
    rng = np.random.default_rng(0)
    for name in ("blocks.0.w_qkv.w", "blocks.1.ln1.g", "blocks.1.w_in.w", "ln_final.g", "embed"):
        index = tuple(rng.integers(0, n) for n in params[name].shape) if name != "embed" else (int(ids[0, 5]), 7)
        h, saved = 1e-6, params[name][index]
        params[name][index] = saved + h
        up, _ = train_forward(params, model.config, ids, targets, mask)
        params[name][index] = saved - h
        down, _ = train_forward(params, model.config, ids, targets, mask)
        params[name][index] = saved
        assert abs((up - down) / (2 * h) - grads[name][index]) < 1e-7, name


def test_cross_entropy_gradient_is_zero_where_masked():
    logits = np.random.default_rng(0).normal(size=(1, 4, 10))
    loss, saved = L.cross_entropy_forward(logits, np.array([[1, 2, 3, 4]]), np.array([[0, 1, 1, 0]]))
    d = L.cross_entropy_backward(saved)
    assert np.all(d[0, [0, 3]] == 0) and np.abs(d[0, 1:3].sum(axis=-1)).max() < 1e-15
    assert loss > 0


def test_the_loss_head_in_chunks_equals_it_whole(monkeypatch):
    """Loss, d_x and d_unembed of the chunked head equal those of one chunk (float64: rounding only), with a mask."""
    from llmx.engine.train import head

    rng = np.random.default_rng(3)
    x, unembed = rng.normal(size=(2, 7, 5)), rng.normal(size=(11, 5))
    targets, mask = rng.integers(0, 11, (2, 7)), (rng.random((2, 7)) > 0.3).astype(np.int64)
    whole = head.head_forward(x, unembed, targets, mask, grad=True, grad_unembed=True)
    monkeypatch.setattr(head, "CHUNK", 3)  # 14 positions: chunks of 3, 3, 3, 3, 2
    chunked = head.head_forward(x, unembed, targets, mask, grad=True, grad_unembed=True)
    assert abs(whole[0] - chunked[0]) < 1e-12
    assert np.abs(whole[1].d_x - chunked[1].d_x).max() < 1e-12
    assert np.abs(whole[1].d_unembed - chunked[1].d_unembed).max() < 1e-12
    assert np.all(chunked[1].d_x[mask == 0] == 0)  # positions left out of the loss get no gradient


def test_lora_gradients_agree_with_finite_differences(tiny_llama):
    """dA and dB (the scale is applied to x A^T in both passes) against central differences in float64."""
    from llmx.engine.train.lora import init_adapters, lora_spec

    model = load(str(tiny_llama))
    ids, targets, mask = batch(model.config.n_vocab, seed=4)
    params = to_params(model.weights, np.float64)
    spec = lora_spec(model.config, 2, 8.0)
    names = init_adapters(params, spec, np.random.default_rng(0))
    rng = np.random.default_rng(5)
    for name in names:
        if name.endswith(".B"):  # B = 0 would make every dA zero
            params[name][...] = rng.normal(0, 0.1, params[name].shape)
    _, tape = train_forward(params, model.config, ids, targets, mask, spec, trainable=set(names))
    grads = train_backward(tape, params, model.config, set(names), spec)
    assert set(grads) == set(names)
    for name in ("blocks.0.w_qkv.lora.k_proj.A", "blocks.0.w_qkv.lora.v_proj.B", "blocks.1.w_in.lora.up_proj.B",
                 "blocks.1.w_out.lora.down_proj.A"):
        index = tuple(rng.integers(0, n) for n in params[name].shape)
        h, saved = 1e-6, params[name][index]
        params[name][index] = saved + h
        up, _ = train_forward(params, model.config, ids, targets, mask, spec)
        params[name][index] = saved - h
        down, _ = train_forward(params, model.config, ids, targets, mask, spec)
        params[name][index] = saved
        assert abs((up - down) / (2 * h) - grads[name][index]) < 1e-7, name


@pytest.mark.parametrize("window, key_widths", [(None, [5, 10, 13]), (4, [5, 8, 6]), (7, [5, 10, 9])])
@pytest.mark.parametrize("n_head, n_kv_head", [(4, 4), (6, 2)])
def test_blocked_causal_attention_equals_the_full_square(monkeypatch, n_head, n_kv_head, window, key_widths):
    """Blocks of 5 query positions over 13 (5, 5, 3: a short last block), with or without a sliding window (a block
    then starts its keys window - 1 before its first query), against the plain causal attention of the whole
    [n_seq, n_seq] square, written out here, and its gradients through one block; float64, so rounding only."""
    rng = np.random.default_rng(6)
    q, dz = rng.normal(size=(2, n_head, 13, 8)), rng.normal(size=(2, n_head, 13, 8))
    k, v = rng.normal(size=(2, n_kv_head, 13, 8)), rng.normal(size=(2, n_kv_head, 13, 8))
    group = n_head // n_kv_head
    scores = q @ np.repeat(k, group, axis=1).swapaxes(-1, -2) / np.sqrt(8)
    dest, src = np.arange(13)[:, None], np.arange(13)[None, :]
    scores[..., (src > dest) | (dest - src >= (window or 13))] = -np.inf
    p = np.exp(scores - scores.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    plain = p @ np.repeat(v, group, axis=1)
    monkeypatch.setattr(L, "ATTN_BLOCK", 13)
    whole = L.attention_backward(dz, L.attention_forward(q, k, v, window)[1])
    monkeypatch.setattr(L, "ATTN_BLOCK", 5)
    z, saved = L.attention_forward(q, k, v, window)
    assert [block.shape[-1] for block in saved[3]] == key_widths
    assert np.abs(z - plain).max() < 1e-12
    for blocked, one in zip(L.attention_backward(dz, saved), whole):
        assert np.abs(blocked - one).max() < 1e-12
