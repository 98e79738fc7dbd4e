"""AdamW, the learning-rate schedule, clipping and LoRA: against a PyTorch training loop and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmx.engine import load
from llmx.engine.train.hfnames import hf_tensors
from llmx.engine.train.lora import all_modules, init_adapters, lora_spec, merged
from llmx.engine.train.net import logits_forward
from llmx.engine.train.optim import AdamW, adamw_state, clip_gradients, schedule
from llmx.engine.train.params import to_params
from llmx.engine.train.step import train_step


def data(n_vocab: int, seed: int, batch: int = 2, n_seq: int = 16):
    tokens = np.random.default_rng(seed).integers(0, n_vocab, (batch, n_seq + 1))
    return tokens[:, :-1], tokens[:, 1:], np.ones((batch, n_seq), np.int64)


def torch_losses(path, batches, opt: AdamW, clip: float) -> list[float]:
    """transformers + torch.optim.AdamW on the same files and batches; decay on matrices only, as llmx."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": opt.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=opt.lr, betas=(opt.beta1, opt.beta2), eps=opt.eps)
    losses = []
    for ids, targets, _ in batches:
        optimizer.zero_grad()
        logits = model(torch.tensor(ids)).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.tensor(targets).reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_ten_adamw_steps_equal_a_pytorch_loop(name, tiny_gpt2, tiny_llama):
    """llm.c's test. Both compute in float32 with different summation orders: after ten steps the losses differ
    by the float32 rounding of a loss of ~11 (1e-6 relative), amplified little because Adam's update is
    lr * sign-like and lr = 1e-3 moves weights by ~1e-2 in all. Measured: ~2e-6."""
    path = tiny_gpt2 if name == "gpt2" else tiny_llama
    model = load(str(path))
    opt = AdamW(lr=1e-3, weight_decay=0.1)
    batches = [data(model.config.n_vocab, seed) for seed in range(10)]
    params = to_params(model.weights)
    state = adamw_state(params, params)
    losses = [train_step(params, model.config, [b], state, opt, opt.lr, trainable=set(params), clip=1.0).loss
              for b in batches]
    expected = torch_losses(path, batches, opt, clip=1.0)
    assert losses[-1] < losses[0] - 0.01  # it learns something, so the test compares real updates
    assert np.abs(np.array(losses) - expected).max() < 1e-5


def test_gradient_accumulation_equals_one_big_batch(tiny_llama):
    model = load(str(tiny_llama))
    ids, targets, mask = data(model.config.n_vocab, 0, batch=4)
    runs = []
    for split in ([slice(0, 4)], [slice(0, 2), slice(2, 4)]):
        params = to_params(model.weights, np.float64)
        state = adamw_state(params, params)
        result = train_step(params, model.config, [(ids[s], targets[s], mask[s]) for s in split], state,
                            AdamW(lr=1e-3), 1e-3, trainable=set(params), clip=None)
        runs.append((result.loss, params))
    assert abs(runs[0][0] - runs[1][0]) < 1e-12
    assert max(np.abs(runs[0][1][n] - runs[1][1][n]).max() for n in runs[0][1]) < 1e-12


def test_schedule_warms_up_then_follows_a_cosine():
    lrs = [schedule(step, 1.0, warmup=4, total=14) for step in range(14)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == 1.0 and lrs[-1] == pytest.approx(0.1)
    assert lrs[9] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 5 / 9)))
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))


def test_clipping_scales_to_the_maximum_norm_and_leaves_small_gradients():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    assert clip_gradients(grads, 1.0) == 5.0
    assert np.sqrt((grads["a"] ** 2).sum() + (grads["b"] ** 2).sum()) == pytest.approx(1.0, abs=1e-6)
    small = {"a": np.array([0.3, 0.4])}
    clip_gradients(small, 1.0)
    assert small["a"].tolist() == [0.3, 0.4]


def lora_params(model, rank=4, seed=0, **options):
    params = to_params(model.weights, np.float64)
    spec = lora_spec(model.config, rank, 8.0, **options)
    names = init_adapters(params, spec, np.random.default_rng(seed))
    return params, spec, names


def test_lora_with_zero_b_gives_the_base_logits_exactly(tiny_llama):
    model = load(str(tiny_llama))
    params, spec, _ = lora_params(model)
    ids = data(model.config.n_vocab, 0)[0]
    base, _ = logits_forward(params, model.config, ids)
    adapted, _ = logits_forward(params, model.config, ids, spec)
    assert np.array_equal(base, adapted)


def test_merged_equals_unmerged(tiny_gpt2, tiny_llama):
    for path in (tiny_gpt2, tiny_llama):
        model = load(str(path))
        params, spec, names = lora_params(model)
        rng = np.random.default_rng(1)
        for name in names:
            if name.endswith(".B"):
                params[name][...] = rng.normal(0, 0.05, params[name].shape)
        ids = data(model.config.n_vocab, 0)[0]
        adapted, _ = logits_forward(params, model.config, ids, spec)
        base, _ = logits_forward(params, model.config, ids)
        folded, _ = logits_forward(merged(params, spec), model.config, ids)
        assert np.abs(adapted - base).max() > 1e-3  # the adapters change the logits
        assert np.abs(folded - adapted).max() < 1e-5


def test_lora_targets_follow_hugging_face_modules(tiny_gpt2, tiny_llama):
    llama = load(str(tiny_llama)).config
    assert all_modules(llama) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert all_modules(load(str(tiny_gpt2)).config) == ["c_attn", "c_fc", "c_proj"]
    spec = lora_spec(llama, 2, 4.0, targets=["q_proj", "v_proj"], last_blocks=1)
    assert spec.slices == {"blocks.1.w_qkv": (("q_proj", 0, 64, "model.layers.1.self_attn.q_proj"),
                                              ("v_proj", 96, 128, "model.layers.1.self_attn.v_proj"))}


def test_overfitting_one_batch_drives_the_loss_below_005(tiny_gpt2):
    """Full training memorises one batch of 24 random tokens (loss ~ln 50257 = 10.8 at the start)."""
    model = load(str(tiny_gpt2))
    params = to_params(model.weights)
    batch = data(model.config.n_vocab, 0, batch=1, n_seq=24)
    opt = AdamW(lr=3e-3)
    state = adamw_state(params, params)
    losses = [train_step(params, model.config, [batch], state, opt, opt.lr, trainable=set(params)).loss
              for _ in range(70)]
    assert losses[0] > 10 and losses[-1] < 0.05


def test_lora_alone_lowers_the_loss(tiny_gpt2):
    model = load(str(tiny_gpt2))
    params = to_params(model.weights)
    spec = lora_spec(model.config, 8, 16.0)
    names = init_adapters(params, spec, np.random.default_rng(0))
    batch = data(model.config.n_vocab, 0, batch=1, n_seq=24)
    state = adamw_state(params, names)
    before = {n: params[n].copy() for n in params if ".lora." not in n}
    losses = [train_step(params, model.config, [batch], state, AdamW(lr=1e-2), 1e-2, trainable=set(names),
                         lora=spec).loss for _ in range(10)]
    assert losses[-1] < losses[0] - 0.5
    assert all(np.array_equal(before[n], params[n]) for n in before)  # the base model is untouched


def test_hf_names_of_a_llama_split_fused_rows(tiny_llama):
    model = load(str(tiny_llama))
    tensors = hf_tensors(to_params(model.weights), model.config)
    assert tensors["model.layers.0.self_attn.k_proj.weight"].shape == (32, 64)
    assert tensors["model.layers.1.mlp.up_proj.weight"].shape == (128, 64)


def test_params_are_row_major_copies_or_shared_frozen_arrays(tiny_gpt2):
    weights = load(str(tiny_gpt2)).weights
    copied, shared = to_params(weights), to_params(weights, copy=False)
    assert all(a.flags.c_contiguous and a.dtype == np.float32
               for name, a in [*copied.items(), *shared.items()] if name != "embed")
    # the tied embedding keeps the column-major layout the pack gives it (packed.column_major), copied or shared
    assert weights.embed.flags.f_contiguous and copied["embed"].flags.f_contiguous
    assert not np.shares_memory(copied["embed"], weights.embed) and shared["embed"] is weights.embed


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_rows_split_between_threads_give_the_one_thread_gradient(name, tiny_gpt2, tiny_llama):
    """With 2 threads, batch_gradient runs 3 rows as parts of 2 and 1 in 2 threads, each part's mean weighed
    by its share of the masked positions (uneven here: 2 + 16 + 9 of 3 x 16): loss and every gradient equal one
    thread's on the whole batch, in float64 to rounding, with full training and with LoRA."""
    from llmx.engine.train.step import batch_gradient

    model = load(str(tiny_gpt2 if name == "gpt2" else tiny_llama))
    ids, targets, mask = data(model.config.n_vocab, 0, batch=3)
    mask[0, 2:] = 0
    mask[2, :7] = 0
    params = to_params(model.weights, np.float64)
    spec = lora_spec(model.config, 2, 4.0)
    adapters = init_adapters(params, spec, np.random.default_rng(0))
    for name in adapters[1::2]:  # every B: B = 0 would make every dA zero
        params[name][...] = np.random.default_rng(1).normal(0, 0.1, params[name].shape)
    for trainable, lora in ((set(params) - set(adapters), None), (set(adapters), spec)):
        one = batch_gradient(params, model.config, ids, targets, mask, trainable, lora, threads=1)
        split = batch_gradient(params, model.config, ids, targets, mask, trainable, lora, threads=2)
        assert abs(one[0] - split[0]) < 1e-12 and set(one[1]) == set(split[1]) == trainable
        for g in one[1]:
            assert np.abs(one[1][g] - split[1][g]).max() < 1e-12, g


def test_adamw_in_threads_updates_as_in_one():
    """Each parameter's update is the same arithmetic whichever thread runs it: equal to the last bit."""
    from llmx.engine.train.optim import adamw_step

    shapes = {"a": (30, 20), "b": (20,), "c": (5, 7, 3), "d": (1,)}
    results = []
    for threads in (1, 3):
        params = {n: np.random.default_rng(1).normal(size=s).astype(np.float32) for n, s in shapes.items()}
        state, opt = adamw_state(params, params), AdamW(lr=1e-2, weight_decay=0.1)
        for seed in range(3):
            grads = {n: np.random.default_rng(seed).normal(size=s).astype(np.float32) for n, s in shapes.items()}
            adamw_step(params, grads, state, opt, opt.lr, threads=threads)
        results.append(params)
    assert all(np.array_equal(results[0][n], results[1][n]) for n in shapes)
    assert not np.array_equal(results[0]["a"], np.random.default_rng(1).normal(size=(30, 20)).astype(np.float32))
