"""Batches in one weight pass: the batched decode step (engine/batched.py) and batch generation
(engine/generate_batch.py) give what single runs give, on GPT-2, Llama and a Gemma-shaped model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import write_tiny_llama

from llmx.engine import KVCache, Sampling, load
from llmx.engine.attention import RowCaches
from llmx.engine.batched import forward_rows
from llmx.engine.generate_batch import run_batch
from llmx.engine.model import Norm, astype

TEXTS = ["Hullo, my name is", "The capital of France is", "a", "One two three four five six seven eight nine ten"]


def gemma_shaped(lm):
    """The tiny Llama with Gemma 3's additions: a local layer with a 5-position ring buffer and its own rotary
    base, normalized queries and keys, sandwich norms, scaled embeddings and a GeGLU MLP."""
    rng = np.random.default_rng(0)
    cfg = lm.config

    def scale(n):
        return Norm(rng.uniform(0.5, 1.5, n).astype(np.float32))

    blocks = tuple(dataclasses.replace(b, q_norm=scale(cfg.d_head), k_norm=scale(cfg.d_head),
                                       ln1_post=scale(cfg.n_embd), ln2_post=scale(cfg.n_embd))
                   for b in lm.weights.blocks)
    config = dataclasses.replace(cfg, arch="gemma3", sliding_window=5, local_layers=(0,), rope_local_theta=1000.0,
                                 qk_norm=True, post_norms=True, embed_scale=8.0, mlp="geglu")
    return dataclasses.replace(lm, config=config, weights=dataclasses.replace(lm.weights, blocks=blocks))


@pytest.fixture(scope="module")
def llama(tmp_path_factory, gpt2_vocab):
    return load(str(write_tiny_llama(tmp_path_factory.mktemp("tiny-llama-batched"), gpt2_vocab, tied=False)))


@pytest.fixture(scope="module", params=["gpt2", "llama", "gemma-shaped"])
def lm(request, tiny_gpt2_model, llama):
    return {"gpt2": tiny_gpt2_model, "llama": llama, "gemma-shaped": gemma_shaped(llama)}[request.param]


def prefilled(lm, texts=TEXTS):
    """A cache per text (ragged: 1 to 10 tokens) and each text's next token."""
    caches, tokens = [], []
    for text in texts:
        logits, cache = lm.forward(lm.prompt_ids(text))
        caches.append(cache)
        tokens.append(int(np.argmax(logits)))
    return tokens, caches


def test_one_row_is_the_single_pass_bit_for_bit(lm):
    tokens, caches = prefilled(lm)
    for token, cache in zip(tokens, caches):
        single, single_cache = lm.forward([token], cache)
        rows, (row_cache,) = forward_rows([token], lm.weights, lm.config, [cache])
        assert np.array_equal(rows[0], single) and row_cache.length == single_cache.length == cache.length + 1


def test_ragged_rows_equal_single_passes_in_float64(lm):
    """In float64 the batch and the single passes sum the same products in other orders: they differ by
    rounding of order n_terms * 2**-52 * |values| (here < 1e-12 for logits of size ~10), while any mistake
    in a row's position, cache or mask would show at the size of the logits themselves."""
    lm64 = dataclasses.replace(lm, weights=astype(lm.weights, np.float64))
    tokens, caches = prefilled(lm64)
    rows, new_caches = forward_rows(tokens, lm64.weights, lm64.config, caches)
    for row, token, cache, new in zip(rows, tokens, caches, new_caches):
        single, _ = lm64.forward([token], cache)
        np.testing.assert_allclose(row, single, rtol=0, atol=1e-9)
        assert new.length == cache.length + 1
    float32, _ = forward_rows(tokens, lm.weights, lm.config, prefilled(lm)[1])
    assert np.abs(float32 - rows).max() > 0  # the float32 rows are not the float64 ones: the check above can fail


def slotted(lm, texts):
    """As `prefilled`, each cache a slot of one RowCaches (the batched attention's layout)."""
    rows, caches, tokens = RowCaches.empty(lm.config, len(texts), lm.weights.embed.dtype), [], []
    for slot, text in enumerate(texts):
        logits, cache = lm.forward(lm.prompt_ids(text), rows.cache(slot))
        caches.append(cache)
        tokens.append(int(np.argmax(logits)))
    return tokens, caches


def test_slotted_rows_attend_together_and_equal_single_passes_in_float64(lm):
    """Rows in slots of one buffer attend in one product, masked past each row's length: ragged rows, a slot
    left out between them (as when a row has finished), grouped-query heads (Llama) and a local layer's ring
    buffer before and after it wraps (the Gemma-shaped model's window is 5), over several steps."""
    lm64 = dataclasses.replace(lm, weights=astype(lm.weights, np.float64))
    texts = TEXTS + ["Once upon a time there was"]
    tokens, slots = slotted(lm64, texts)
    _, singles = prefilled(lm64, texts)
    keep = [0, 2, 3, 4]  # slot 1 idle
    tokens, slots, singles = [tokens[i] for i in keep], [slots[i] for i in keep], [singles[i] for i in keep]
    first_tokens = tokens
    for step in range(3):
        rows, slots = forward_rows(tokens, lm64.weights, lm64.config, slots)
        first_rows = rows if step == 0 else first_rows
        for r, (token, cache) in enumerate(zip(tokens, singles)):
            single, singles[r] = lm64.forward([token], cache)
            np.testing.assert_allclose(rows[r], single, rtol=0, atol=1e-9)
            assert slots[r].length == singles[r].length
        tokens = [int(np.argmax(row)) for row in rows]
    assert min(s.length for s in slots) < 5 < max(s.length for s in slots)  # ragged, some past the window
    float32, _ = forward_rows(first_tokens[:2], lm.weights, lm.config, slotted(lm, texts)[1][:2])
    assert np.abs(float32 - first_rows[:2]).max() > 0  # float32 is not float64: the checks above can fail


def test_slotted_greedy_batch_equals_single_runs(lm):
    """complete_batch puts its rows in slots of one RowCaches: greedy tokens equal single runs', rows
    finishing at different steps (idle slots among the live ones)."""
    prompts, greedy = [lm.prompt_ids(t) for t in TEXTS], Sampling(temperature=0)
    lengths = [9, 3, 14, 6]
    batch = [lm.complete_batch([p], n, sampling=greedy)[0] for p, n in zip(prompts, lengths)]
    together = [r for _, r in sorted(run_batch([lm.generate(p, n, sampling=greedy)
                                                for p, n in zip(prompts, lengths)]), key=lambda f: f[0])]
    same(together, batch)
    same(together, [lm.complete(p, n, sampling=greedy) for p, n in zip(prompts, lengths)])


def test_the_step_needs_room_and_one_token_per_cache(lm):
    full = dataclasses.replace(KVCache.empty(lm.config), length=lm.config.n_ctx)
    with pytest.raises(ValueError, match="slide it first"):
        forward_rows([1], lm.weights, lm.config, [full])
    with pytest.raises(ValueError, match="one token per cache"):
        forward_rows([1, 2], lm.weights, lm.config, [KVCache.empty(lm.config)])


def same(batch, singles) -> None:
    assert [(r.ids, r.text, r.finish_reason, r.prompt_ids) for r in batch] == \
           [(r.ids, r.text, r.finish_reason, r.prompt_ids) for r in singles]


def test_greedy_batch_equals_single_runs_past_the_window(lm):
    """70 tokens after ragged prompts, in a 64-position context: every row slides its window on its own."""
    prompts, greedy, notices = [lm.prompt_ids(t) for t in TEXTS], Sampling(temperature=0), []
    batch = lm.complete_batch(prompts, 70, sampling=greedy, on_notice=notices.append)
    same(batch, [lm.complete(p, 70, sampling=greedy) for p in prompts])
    assert all(len(r.ids) == 70 for r in batch) and sum("window of 64 tokens is full" in n for n in notices) >= 4


@pytest.mark.parametrize("sampling", [Sampling(temperature=1.0), Sampling(temperature=0.8, top_k=40, top_p=0.9)],
                         ids=["t1", "topkp"])
def test_sampled_rows_equal_single_runs_with_their_own_seeds(lm, sampling):
    prompts, seeds = [lm.prompt_ids(t) for t in TEXTS + TEXTS[:1]], [1, 2, 3, 2**32 - 1, 2]
    batch = lm.complete_batch(prompts, 12, seeds=seeds, sampling=sampling)
    same(batch, [lm.complete(p, 12, seed=s, sampling=sampling) for p, s in zip(prompts, seeds)])
    assert batch[0].ids != batch[4].ids  # rows 0 and 4: the same prompt, another seed


def test_rows_stop_on_their_own_and_leave_in_the_order_they_finish(lm):
    greedy = Sampling(temperature=0)
    prompts = [lm.prompt_ids(t) for t in TEXTS]
    free = lm.complete(prompts[1], 12, sampling=greedy)
    stop = free.text[len(lm.complete(prompts[1], 5, sampling=greedy).text):][:3]  # text after token 5
    row2 = lm.complete(prompts[2], 12, sampling=greedy).ids
    eos = row2[len(row2) // 2]  # a token from the middle of row 2's run, made end-of-text
    model = dataclasses.replace(lm, tokenizer=dataclasses.replace(lm.tokenizer, eos_ids=frozenset({eos})))
    requests = [(prompts[0], 9, ()), (prompts[1], 12, (stop,)), (prompts[2], 12, ()), (prompts[3], 0, ()),
                (prompts[0], 3, ())]
    finished = list(run_batch([model.generate(p, n, sampling=greedy, stop=s) for p, n, s in requests]))
    singles = [model.complete(p, n, sampling=greedy, stop=s) for p, n, s in requests]
    same([result for _, result in sorted(finished, key=lambda f: f[0])], singles)
    assert [r.finish_reason for r in singles] == ["length", "stop", "stop", "length", "length"]
    assert singles[1].ids and not singles[1].text.endswith(stop) and len(singles[2].ids) == row2.index(eos)
    # A row leaves at the step that samples its last token (end-of-text: the step after its last token).
    steps = [9, len(singles[1].ids), len(singles[2].ids) + 1, 1, 3]
    assert [index for index, _ in finished] == sorted(range(5), key=lambda i: (steps[i], i))


def test_hooked_rows_run_alone_and_equal_their_single_runs(lm):
    from llmx.engine.interp import ablated, parse_ablation

    hooked = ablated(lm, parse_ablation("0.mlp,1.mlp"), "zero")
    prompts, options = [lm.prompt_ids(t) for t in TEXTS[:2]], dict(seed=1, sampling=Sampling(temperature=1.0))
    results = dict(run_batch([hooked.generate(prompts[0], 6, **options), lm.generate(prompts[1], 6, **options),
                              lm.generate(prompts[0], 6, **options)]))
    same([results[0], results[1], results[2]], [hooked.complete(prompts[0], 6, **options),
                                                lm.complete(prompts[1], 6, **options),
                                                lm.complete(prompts[0], 6, **options)])
    assert results[0].ids != results[2].ids  # the hooks acted: the same prompt and seed without them differs


def test_seeds_must_match_the_prompts(lm):
    with pytest.raises(ValueError, match="one seed per prompt"):
        lm.complete_batch([[1], [2]], 3, seeds=[1])
