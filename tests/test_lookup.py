"""Prompt-lookup decoding gives exactly plain greedy decoding's tokens, in fewer passes when the text repeats."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import tiny_variant
from llmx.engine import LanguageModel, Sampling
from llmx.engine import lookup as lookup_module
from llmx.engine.hooks import Hooks
from llmx.engine.lookup import Lookup, agreeing, draft, usable
from test_gemma3_hf import TINY_GEMMA_TOLERANCE  # its float32 logits' bound
from test_gemma3_interp import load_tiny_gemma3, write_tiny_gemma3

GREEDY = Sampling(temperature=0)


def test_draft_copies_what_followed_the_latest_occurrence_of_the_tail():
    assert draft([1, 2, 3, 4, 9, 2, 3, 4, 6, 2, 3], k=2) == [4, 6]  # latest "2 3" followed by 2 tokens
    assert draft([5, 1, 2, 3, 6, 1, 2, 3, 6, 1, 2, 3], k=2) == [6, 1]  # "1 2 3" before "2 3"
    assert draft([1, 2, 3, 4], k=4) == []  # nothing repeats
    assert draft([1, 2, 1, 2], k=0) == []


def test_draft_guesses_nothing_after_a_tail_the_text_went_on_from_in_several_ways():
    assert draft([1, 2, 3, 4, 9, 2, 3, 5, 6, 2, 3], k=2) == []  # "2 3" was followed by 4, then by 5
    assert draft([4, 4, 4, 9, 4, 4, 4, 4], k=2) == []  # "4 4 4" by 9 and by 4 (no earlier "4 4 4 4")
    assert draft([7, 8, 9, 1, 2, 3, 4, 8, 9, 5, 7, 8, 9], k=3) == [1, 2, 3]  # "8 9" by 1 and 5, "7 8 9" by 1 only


def test_draft_repeats_a_loop_that_has_just_begun():
    """When no occurrence is followed by k tokens, the text after the latest one is taken as a loop's turn."""
    assert draft([5, 6, 5, 6], k=5) == [5, 6, 5, 6, 5]  # "5 6" at 0: the turn "5 6" again and again
    assert draft([1, 2, 3, 1, 2, 3, 1, 2], k=4) == [3, 1, 2, 3]  # "2 3 1 2" at 1: turns of "3 1 2"
    assert draft([8, 7, 7, 7], k=3) == [7, 7, 7]  # "7 7" at 1, followed by one 7: a loop of one token


def slow_draft(context: list[int], k: int, ngrams: tuple[int, ...]) -> list[int]:
    """`draft`'s rule, written out position by position."""
    for n in ngrams:
        tail = context[-n:]
        after = [e + 1 for e in range(n - 1, len(context) - 1) if context[e - n + 1:e + 1] == tail]
        if not after or k < 1:
            continue
        if len({context[a] for a in after}) > 1:
            return []
        whole = [a for a in after if a + k <= len(context)]
        start = whole[-1] if whole else after[-1]
        return [context[start + i % (len(context) - start)] for i in range(k)]
    return []


def test_draft_is_its_rule_position_by_position():
    rng = np.random.default_rng(0)
    for _ in range(3000):
        context = rng.integers(0, int(rng.integers(1, 6)), int(rng.integers(1, 40))).tolist()  # few token ids: repeats
        k, ngrams = int(rng.integers(0, 17)), [(4, 3, 2), (3, 2), (2,), (5, 1)][int(rng.integers(0, 4))]
        assert draft(context, k, ngrams) == slow_draft(context, k, ngrams), (context, k, ngrams)


def test_agreeing_counts_leading_guesses_that_are_the_greedy_choice():
    rows = np.eye(5)[[3, 1, 4, 0]]  # argmax of each row: 3, 1, 4, 0
    assert agreeing(rows, [3, 1, 4]) == 3
    assert agreeing(rows, [3, 2, 4]) == 1
    assert agreeing(rows, [0, 1, 4]) == 0
    assert agreeing(rows[:1], [0, 1, 4]) == 0  # rows stop after the first rejected guess
    assert agreeing(rows[:2], [3, 2, 4]) == 1


@pytest.fixture(scope="module", params=["gpt2", "llama", "llama-local"])
def tiny(request, tiny_gpt2_model, tiny_llama_model):
    """GPT-2, Llama, and Llama with a local layer whose ring buffer holds 6 positions (conftest.tiny_variant)."""
    return tiny_variant(request.param, tiny_gpt2_model, tiny_llama_model)


@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory, gpt2_vocab):
    """A tiny Gemma 3 (test_gemma3_interp's): 7 blocks, local ones with windows of 4 positions in ring buffers."""
    return load_tiny_gemma3(write_tiny_gemma3(tmp_path_factory.mktemp("lookup-gemma3"), gpt2_vocab))


@pytest.fixture
def verdicts(monkeypatch):
    """(kept, drafted) of every checking pass."""
    seen = []

    def spy(rows, guesses):
        kept = agreeing(rows, guesses)
        seen.append((kept, len(guesses)))
        return kept

    monkeypatch.setattr(lookup_module, "agreeing", spy)
    return seen


PROMPTS = [
    "the cat sat on the mat. the cat sat on the mat. the cat sat on the",
    "one two three four five six one two three four five six one two",
    "Hullo, my name is",
]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_lookup_gives_plain_greedy_tokens(tiny, prompt, verdicts):
    ids = tiny.tokenizer.encode(prompt)
    plain = tiny.complete(ids, 30, sampling=GREEDY, lookup=False)
    assert verdicts == []
    looked = tiny.complete(ids, 30, sampling=GREEDY)
    assert looked.ids == plain.ids and looked.text == plain.text and looked.finish_reason == plain.finish_reason


def test_lookup_checks_drafts_keeping_some_and_rejecting_others(tiny_gpt2_model, verdicts):
    """The tiny GPT-2 falls into repeating a token, then switches to another: drafts kept, then one rejected."""
    prompt = tiny_gpt2_model.tokenizer.encode("1 2 3 1 2 3 1 2 3 1 2")
    assert tiny_gpt2_model.complete(prompt, 30, sampling=GREEDY).ids == \
        tiny_gpt2_model.complete(prompt, 30, sampling=GREEDY, lookup=False).ids
    assert any(kept > 0 for kept, _ in verdicts)  # passes that made several tokens
    assert any(kept < drafted for kept, drafted in verdicts)  # and a guess the model did not make


def test_a_rejected_draft_leaves_a_cache_that_continues_like_a_full_pass(tiny, verdicts):
    """The context ends with a bigram seen before, so the tokens after it are drafted; a random model rejects
    them, and what they wrote into the cache past its length must not matter."""
    ids = tiny.tokenizer.encode("Hullo, my name is Ishmael and I sail")
    context = ids + ids[:2]
    _, cache = tiny.forward(context[:-1])
    logits, cache = Lookup(tiny).next(context, cache)
    rings = [tiny.config.sliding_window - 1] if tiny.config.local_layers else []  # a check's positions take distinct slots
    assert verdicts and verdicts[0][0] < verdicts[0][1] == min([lookup_module.MAX_DRAFT, *rings])
    assert cache.length == len(context)
    after, _ = tiny.forward([5], cache)
    full, _ = tiny.forward(context + [5], all_logits=True)
    np.testing.assert_allclose(logits, full[-2], rtol=0, atol=1e-5)  # float32 reorder bound, see float64.py
    np.testing.assert_allclose(after, full[-1], rtol=0, atol=1e-5)


def test_final_states_unembedded_are_the_logits(tiny):
    ids = tiny.tokenizer.encode(PROMPTS[0])
    logits, cache = tiny.forward(ids, all_logits=True)
    states, same_cache = tiny.forward(ids, all_logits=True, states=True)
    assert states.shape == (len(ids), tiny.config.n_embd) and same_cache.length == cache.length
    np.testing.assert_array_equal(tiny.unembed(states), logits)


def test_only_a_kept_first_guess_has_the_other_rows_unembedded(tiny_gpt2_model, verdicts, monkeypatch):
    """A check unembeds its first row alone, then the guesses' rows only if the first guess was the model's."""
    calls, real = [], LanguageModel.unembed

    def spy(self, states):
        calls.append(len(states))
        return real(self, states)

    monkeypatch.setattr(LanguageModel, "unembed", spy)
    tokens = tiny_gpt2_model.tokenizer.encode
    tiny_gpt2_model.complete(tokens("1 2 3 1 2 3 1 2 3 1 2"), 30, sampling=GREEDY)  # guesses kept (see above)
    ids = tokens("Hullo, my name is Ishmael and I sail")  # a first guess rejected (see below)
    _, cache = tiny_gpt2_model.forward(ids + ids[:1])
    Lookup(tiny_gpt2_model).next(ids + ids[:2], cache)
    assert any(kept == 0 for kept, _ in verdicts) and any(kept > 0 for kept, _ in verdicts)
    assert calls == [n for kept, drafted in verdicts for n in ([1] if kept == 0 else [1, drafted])]


@pytest.mark.parametrize("max_tokens", [1, 2, 6, 20])
def test_a_run_guesses_no_further_than_its_last_token(tiny_gpt2_model, monkeypatch, max_tokens):
    """After its j-th token a run of n may make n - j more, so it guesses at most n - j - 1 (and MAX_DRAFT)."""
    asked, real = [], lookup_module.draft

    def spy(context, k=lookup_module.MAX_DRAFT, *args):
        asked.append(k)
        return real(context, k, *args)

    monkeypatch.setattr(lookup_module, "draft", spy)
    ids = tiny_gpt2_model.tokenizer.encode(PROMPTS[0])
    looked = tiny_gpt2_model.complete(ids, max_tokens, sampling=GREEDY)
    assert looked.ids == tiny_gpt2_model.complete(ids, max_tokens, sampling=GREEDY, lookup=False).ids
    assert asked[:1] == ([min(lookup_module.MAX_DRAFT, max_tokens - 2)] if max_tokens > 1 else [])
    assert all(k <= min(lookup_module.MAX_DRAFT, max_tokens - 1 - j) for j, k in enumerate(asked, 1))


def test_lookup_up_to_the_end_of_the_context_and_past_it(tiny_gpt2_model, verdicts):
    """The tiny GPT-2's context is 64: drafts are cut to the room left, then the window slides."""
    ids = tiny_gpt2_model.tokenizer.encode(PROMPTS[0])
    plain = tiny_gpt2_model.complete(ids, 80, sampling=GREEDY, lookup=False)
    looked = tiny_gpt2_model.complete(ids, 80, sampling=GREEDY)
    assert looked.ids == plain.ids and len(plain.ids) + len(plain.prompt_ids) > 64
    assert verdicts


def steps_match_a_plain_run(model, ids: list[int], n: int, atol: float = 1e-5) -> None:
    """Each logits row lookup returns (fetched ahead or computed) is the one plain decoding computes, for n tokens.
    A ring buffer is its own object in each run: lookup's and the plain run's caches must not share buffers."""
    logits, cache = model.forward(ids)
    plain_logits, plain_cache = model.forward(ids)
    ahead, context = Lookup(model), list(ids)
    for _ in range(n):
        token = int(np.argmax(logits))
        assert token == int(np.argmax(plain_logits))
        context.append(token)
        logits, cache = ahead.next(context, cache)
        plain_logits, plain_cache = model.forward([token], plain_cache)
        assert cache.length == plain_cache.length == len(context)
        np.testing.assert_allclose(logits, plain_logits, rtol=0, atol=atol)  # float32 reorder, as in float64.py


@pytest.mark.parametrize("prompt", PROMPTS[:2])
def test_lookup_steps_match_a_plain_run_logit_for_logit(tiny, prompt):
    steps_match_a_plain_run(tiny, tiny.tokenizer.encode(prompt), 20)


def test_lookup_on_gemma3_keeps_guesses_through_its_ring_buffers(tiny_gemma, verdicts):
    """Gemma 3's local layers keep 4 positions, so a check guesses at most 3 tokens (its 4 positions take distinct
    slots). The tiny model repeats one token: checks keep their guesses, whose keys the ring buffers hold."""
    ids = tiny_gemma.tokenizer.encode("1 2 3 1 2 3 1 2 3 1 2 3 1 2")
    steps_match_a_plain_run(tiny_gemma, ids, 40, TINY_GEMMA_TOLERANCE)
    assert max(drafted for _, drafted in verdicts) == tiny_gemma.config.sliding_window - 1
    assert all(kept == drafted for kept, drafted in verdicts[1:])


def test_a_ring_buffer_gets_back_the_slots_of_rejected_guesses(tiny_gemma, verdicts):
    """Guesses rejected in a check had taken the ring slots of the positions before them, which the next tokens
    see: the tokens after the check continue as a full pass does."""
    ids = tiny_gemma.tokenizer.encode("Hullo, my name is Ishmael and I sail")
    context = ids + ids[:2]  # ends with a bigram seen before: the tokens after it are guessed
    _, cache = tiny_gemma.forward(context[:-1])
    logits, cache = Lookup(tiny_gemma).next(context, cache)
    assert verdicts == [(0, 3)]  # all three rejected
    full, _ = tiny_gemma.forward(context + [5, 6, 7], all_logits=True)
    np.testing.assert_allclose(logits, full[len(context) - 1], rtol=0, atol=TINY_GEMMA_TOLERANCE)
    for i, token in enumerate([5, 6, 7]):
        logits, cache = tiny_gemma.forward([token], cache)
        np.testing.assert_allclose(logits, full[len(context) + i], rtol=0, atol=TINY_GEMMA_TOLERANCE)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_lookup_on_gemma3_gives_plain_greedy_tokens(tiny_gemma, prompt):
    ids = tiny_gemma.tokenizer.encode(prompt)
    plain = tiny_gemma.complete(ids, 40, sampling=GREEDY, lookup=False)
    assert tiny_gemma.complete(ids, 40, sampling=GREEDY).ids == plain.ids


def test_lookup_is_used_only_where_it_cannot_change_the_tokens(tiny_llama_model):
    ids = [1, 2, 3]
    req = tiny_llama_model.generate(ids, 5, sampling=GREEDY).request
    assert usable(tiny_llama_model, req)
    assert not usable(tiny_llama_model, dataclasses.replace(req, lookup=False))
    assert not usable(tiny_llama_model, dataclasses.replace(req, sampling=Sampling(temperature=0.7)))
    hooks = Hooks().add("blocks.0.attn_out", lambda value, site: None)
    assert not usable(tiny_llama_model, dataclasses.replace(req, hooks=hooks))
    assert usable(tiny_variant("llama-local", None, tiny_llama_model), req)  # ring buffers get their slots back


@pytest.mark.parametrize("flags,looks", [((), True), (("--lookup",), True), (("--no-lookup",), False),
                                         (("--context", "CONTEXT"), True),
                                         (("--context", "CONTEXT", "--no-lookup"), False)])
def test_greedy_continue_uses_lookup_unless_told_not_to(flags, looks, tiny_gpt2, tmp_path, verdicts):
    """`continue --temperature 0` uses lookup, with a context or without, unless --no-lookup; the tokens are the
    same either way."""
    from test_cli import run

    context = tmp_path / "context.txt"
    context.write_text("1 2 3 1 2 3 1 2 3 1 2")
    args = [str(context) if flag == "CONTEXT" else flag for flag in flags]
    base = ["continue", "-m", str(tiny_gpt2), "-t", "0", "--max-tokens", "20", "1 2 3 1 2 3 1 2"]
    looked = run(*base, *args)
    assert looked.exit_code == 0 and bool(verdicts) == looks
    plain = run(*base, *[a for a in args if a not in ("--lookup", "--no-lookup")], "--no-lookup")
    assert plain.stdout == looked.stdout
