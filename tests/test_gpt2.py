"""Layers 2 and 3: a tiny random GPT-2 against Hugging Face transformers on the same files."""

import numpy as np
import pytest

import float64
from llmx.engine import Sampling
from llmx.engine.model import KVCache

TINY_FLOAT32_TOLERANCE = float64.TINY_FLOAT32_TOLERANCE


@pytest.fixture
def ours(tiny_gpt2_model):
    return tiny_gpt2_model


@pytest.fixture
def reference(tiny_gpt2_reference):
    return tiny_gpt2_reference


@pytest.fixture(scope="module")
def ours64(tiny_gpt2_model):
    return float64.llmx_float64(tiny_gpt2_model)


@pytest.fixture(scope="module")
def reference64(tiny_gpt2_reference):
    return float64.transformers_float64(tiny_gpt2_reference)


@pytest.mark.parametrize("length", [1, 2, 7, 33, 64])
def test_float64_logits_match_transformers_float64(ours64, reference64, length):
    ids = np.random.default_rng(length).integers(0, 50257, size=length).tolist()
    logits, cache = ours64.forward(ids, all_logits=True)
    assert logits.shape == (length, 50257) and logits.dtype == np.float64
    assert np.abs(logits - float64.logits(reference64, ids)).max() < float64.float64_tolerance(TINY_FLOAT32_TOLERANCE)
    assert cache.length == length


@pytest.mark.parametrize("length", [1, 7, 64])
def test_float32_logits_are_the_float64_ones_up_to_rounding(ours, ours64, length):
    ids = np.random.default_rng(length).integers(0, 50257, size=length).tolist()
    logits, _ = ours.forward(ids, all_logits=True)
    assert logits.dtype == np.float32
    assert np.abs(logits - ours64.forward(ids, all_logits=True)[0]).max() < TINY_FLOAT32_TOLERANCE


def test_last_position_logits_equal_the_full_pass(ours):
    ids = [39, 724, 78, 11, 616, 1438, 318]
    full, _ = ours.forward(ids, all_logits=True)
    last, _ = ours.forward(ids)
    np.testing.assert_allclose(last, full[-1], atol=1e-5)


def test_cached_decoding_equals_full_recompute(ours):
    ids = np.random.default_rng(1).integers(0, 50257, size=20).tolist()
    full, _ = ours.forward(ids, all_logits=True)
    logits, cache = ours.forward(ids[:5], all_logits=True)
    steps = [logits]
    for token in ids[5:]:
        logits, cache = ours.forward([token], cache)
        steps.append(logits[None])
    assert np.abs(np.concatenate(steps) - full).max() < 1e-5


def test_an_old_cache_still_describes_its_prefix(ours):
    ids = [39, 724, 78, 11, 616]
    _, prefix = ours.forward(ids[:3])
    a, _ = ours.forward(ids[3:4], prefix)
    ours.forward([5, 6], prefix)  # a different branch from the same prefix
    b, _ = ours.forward(ids[3:4], prefix)
    np.testing.assert_array_equal(a, b)


def test_context_overflow_is_refused(ours):
    with pytest.raises(ValueError, match="exceed"):
        ours.forward(list(range(65)))


def test_greedy_continuation_matches_transformers_generate(ours, reference):
    import torch

    prompt = ours.prompt_ids("Hullo, my name is")
    generation = ours.complete(prompt, 20, sampling=Sampling(temperature=0))
    with torch.no_grad():
        out = reference.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False,
                                 pad_token_id=50256, eos_token_id=None)
    assert generation.ids == out[0, len(prompt):].tolist()
    assert generation.finish_reason == "length"


def test_same_seed_same_text_other_seed_other_text(ours):
    prompt = ours.prompt_ids("Hullo")
    runs = [ours.generate(prompt, 15, seed=s) for s in (1, 1, 2)]
    texts = ["".join(step.text for step in run) for run in runs]
    assert texts[0] == texts[1] != texts[2]
    assert texts[0] == runs[0].result().text


def test_stop_sequence_ends_generation_and_is_not_included(ours):
    prompt = ours.prompt_ids("Hullo")
    free = ours.complete(prompt, 15, sampling=Sampling(temperature=0))
    stop = free.text[5:8]
    stopped = ours.generate(prompt, 15, sampling=Sampling(temperature=0), stop=(stop,))
    shown = "".join(step.text for step in stopped)
    assert stopped.result().finish_reason == "stop"
    assert shown == stopped.result().text == free.text[:free.text.index(stop)]


def test_iterating_again_is_a_fresh_run_and_never_appends_twice(ours):
    generation = ours.generate(ours.prompt_ids("Hullo"), 8, seed=3)
    first, second = list(generation), list(generation)
    assert first == second and len(first) >= 8
    result = generation.result()
    assert result.text == "".join(step.text for step in first) and len(result.ids) == 8
    assert result.ids == [step.id for step in first][:8] and result.finish_reason == "length"
    assert result == ours.complete(ours.prompt_ids("Hullo"), 8, seed=3)


def test_request_and_result_are_frozen_and_result_is_of_the_run_streamed(ours):
    import dataclasses

    generation = ours.generate(ours.prompt_ids("Hullo"), 6)  # no seed: each run differs
    shown = "".join(step.text for step in generation)
    result = generation.result()
    assert result.text == shown and result.prompt_ids == ours.prompt_ids("Hullo")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.text = ""
    with pytest.raises(dataclasses.FrozenInstanceError):
        generation.request.max_tokens = 1
    partial = ours.generate(ours.prompt_ids("Hullo"), 6, seed=0)
    next(iter(partial))  # a run abandoned after one step has no result: result() runs one to the end
    assert len(partial.result().ids) == 6


def test_bad_requests_are_input_errors(ours):
    from llmx.engine import InputError

    with pytest.raises(InputError, match="max tokens must be 0 or more"):
        ours.generate([1], -1)
    with pytest.raises(InputError, match="stop sequence cannot be empty"):
        ours.generate([1], 3, stop=("",))


def test_empty_prompt_conditions_on_endoftext(ours):
    assert ours.prompt_ids("") == [50256]


def test_long_prompt_keeps_its_most_recent_tokens(ours):
    notices = []
    prompt = list(range(100, 160))  # 60 tokens; context 64
    generation = ours.generate(prompt, 10, seed=0, on_notice=notices.append)
    assert generation.prompt_ids == prompt[-54:]
    assert len(generation.result().ids) == 10 and "keeping its last 54 tokens" in notices[0]


def test_generation_past_the_window_slides_it(ours):
    notices = []
    generation = ours.complete([1, 2, 3], 100, seed=0, on_notice=notices.append)
    assert len(generation.ids) == 100 and any("is full" in n for n in notices)


def test_kv_cache_is_allocated_for_the_whole_window(ours):
    cache = KVCache.empty(ours.config)
    assert cache.k[0].shape == (4, 64, 16)
