"""engine.interp: traces against transformers, the logit lens against predict, head scores on
synthetic patterns, neighbours, steering, explain; and the same functions on a tiny Llama-shaped model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from llmx.engine import InputError, Sampling, Trace
from llmx.engine import interp as ins
from llmx.engine.lm import LanguageModel
from llmx.engine.model import Block, Config, Linear, Norm, Weights

TEXT = "Hullo, my name is"


@pytest.fixture
def lm(tiny_gpt2_model):
    return tiny_gpt2_model


@pytest.fixture
def ids(lm):
    return lm.prompt_ids(TEXT)


def test_trace_matches_transformers_hidden_states_and_attentions(lm, tiny_gpt2, ids):
    import torch
    from transformers import GPT2LMHeadModel

    reference = GPT2LMHeadModel.from_pretrained(tiny_gpt2, attn_implementation="eager").eval()
    with torch.no_grad():
        out = reference(torch.tensor([ids]), output_hidden_states=True, output_attentions=True)
    trace = Trace()
    lm.forward(ids, all_logits=True, hooks=trace)
    n_layer = lm.config.n_layer
    assert len(out.hidden_states) == n_layer + 1
    for i in range(n_layer):  # hidden_states[i] is the stream entering block i ...
        np.testing.assert_allclose(trace[f"blocks.{i}.resid_pre"], out.hidden_states[i][0].numpy(), atol=1e-5)
        np.testing.assert_allclose(trace[f"blocks.{i}.attn.pattern"], out.attentions[i][0].numpy(), atol=1e-5)
    # ... and the last one is after the final norm, not the last block's output
    np.testing.assert_allclose(trace["ln_final"], out.hidden_states[-1][0].numpy(), atol=1e-4)


def test_lens_last_row_is_predict_exactly(lm, ids):
    lens = ins.logit_lens(lm, ids, top=5)
    assert lens.layers == ["embed", "block 0", "block 1"] and lens.positions == list(range(len(ids)))
    assert len(lens.top) == 3 and all(len(row) == len(ids) for row in lens.top)
    assert lens.top[-1][-1] == lm.predict(ids, 5)  # the same Prediction objects' numbers, not approximately
    full, _ = lm.forward(ids, all_logits=True)  # the last row at other positions: the model's own outputs
    for p in range(len(ids)):
        assert lens.top[-1][p][0].id == int(full[p].argmax())
    # the embed row reads the embeddings through the final norm and unembedding
    x = lm.weights.embed[ids] + lm.weights.pos_embed[:len(ids)]
    assert [c[0].id for c in lens.top[0]] == ins.unembed(x, lm).argmax(-1).tolist()


def test_lens_at_one_position_and_bad_positions(lm, ids):
    one = ins.logit_lens(lm, ids, top=3, positions=[-1])
    assert one.positions == [len(ids) - 1] and one.top[-1][0] == lm.predict(ids, 3)
    with pytest.raises(InputError, match="position 7 is outside the text's 7 tokens"):
        ins.logit_lens(lm, ids, positions=[7])


def test_attention_rows_sum_to_one_and_never_look_ahead(lm, ids):
    att = ins.attention(lm, ids, layer=1)
    n = len(ids)
    assert att.heads == [0, 1, 2, 3] and att.pattern.shape == (4, n, n)
    np.testing.assert_allclose(att.pattern.sum(-1), 1, atol=1e-6)
    assert np.all(att.pattern[:, np.triu_indices(n, 1)[0], np.triu_indices(n, 1)[1]] == 0)
    one = ins.attention(lm, ids, layer=1, head=2)
    np.testing.assert_array_equal(one.pattern[0], att.pattern[2])


@pytest.mark.parametrize("layer, head, message", [(2, None, "blocks 0..1"), (-1, None, "layer -1"),
                                                  (0, 4, "heads 0..3")])
def test_attention_out_of_range(lm, ids, layer, head, message):
    with pytest.raises(InputError, match=message):
        ins.attention(lm, ids, layer, head)


def ideal_pattern(tokens: list[int], kind: str) -> np.ndarray:
    """The pattern [1, dest, src] of a perfect head of one kind; with nothing to find it rests on position 0."""
    n = len(tokens)
    pattern = np.zeros((1, n, n))
    for i in range(n):
        earlier = [j for j in range(i) if tokens[j] == tokens[i]]
        if kind == "previous":
            src = max(i - 1, 0)
        elif earlier and kind == "duplicate":
            src = earlier[-1]
        elif earlier and kind == "induction":
            src = earlier[-1] + 1
        else:
            src = 0
        pattern[0, i, src] = 1.0
    return pattern


@pytest.mark.parametrize("kind", ["induction", "previous", "duplicate"])
def test_score_heads_on_perfect_synthetic_heads(lm, kind):
    repeated, control = ins.random_sequences(lm, 12, seed=3)
    on_repeat = ins.score_heads(ideal_pattern(repeated, kind), 12, prefix=1)
    on_control = ins.score_heads(ideal_pattern(control, kind), 12, prefix=1)
    assert getattr(on_repeat, kind)[0] == pytest.approx(1.0)
    for other in {"induction", "previous", "duplicate"} - {kind}:
        assert getattr(on_repeat, other)[0] < 0.1
    if kind != "previous":  # previous-token heads need no repeats
        assert getattr(on_control, kind)[0] == pytest.approx(0.0)
    else:
        assert on_control.previous[0] == pytest.approx(1.0)


def test_score_heads_on_uniform_attention_and_bad_shapes():
    n, seq_len = 9, 4
    uniform = np.tril(np.ones((2, n, n))) / np.arange(1, n + 1)[:, None]
    scores = ins.score_heads(uniform, seq_len, prefix=1)
    second = np.arange(5, 9)
    assert scores.induction == pytest.approx([np.mean(1 / (second + 1))] * 2)
    with pytest.raises(InputError):
        ins.score_heads(uniform, 5, prefix=1)


def test_random_sequences_repeat_and_control_does_not(lm):
    repeated, control = ins.random_sequences(lm, 10, seed=0)
    assert repeated[0] == control[0] == 50256 and len(repeated) == len(control) == 21
    assert repeated[1:11] == repeated[11:] and len(set(repeated[1:])) == 10
    assert len(set(control[1:])) == 20 and 50256 not in control[1:]
    assert ins.random_sequences(lm, 10, seed=0) == (repeated, control) != ins.random_sequences(lm, 10, seed=1)


def test_scan_heads_covers_every_head_sorted(lm):
    scan = ins.scan_heads(lm, seq_len=10, seed=0)
    assert len(scan.heads) == 8
    assert {(s.layer, s.head) for s in scan.heads} == {(layer, h) for layer in range(2) for h in range(4)}
    assert [s.induction for s in scan.heads] == sorted((s.induction for s in scan.heads), reverse=True)
    pattern = ins.patterns(lm, scan.repeated_ids)[scan.heads[0].layer][scan.heads[0].head]
    assert scan.heads[0].induction == pytest.approx(float(np.mean([pattern[i, i - 9] for i in range(11, 21)])))
    with pytest.raises(InputError, match="must be 2..31"):
        ins.scan_heads(lm, seq_len=32)


def test_neighbors_by_cosine_and_through_the_unembedding(lm):
    token = ins.single_token(lm, " my")
    nb = ins.neighbors(lm, token, top=5)
    wte = lm.weights.embed
    cosine = wte @ wte[token] / (np.linalg.norm(wte, axis=1) * np.linalg.norm(wte[token]))
    cosine[token] = -2
    assert [n.id for n in nb.similar] == np.argsort(-cosine)[:5].tolist() and token not in [n.id for n in nb.similar]
    assert nb.similar[0].similarity == pytest.approx(float(cosine.max()), abs=1e-5) and nb.tied
    direct = ins.unembed(wte[token][None], lm)[0]
    assert [p.id for p in nb.unembedded] == np.argsort(-direct)[:5].tolist()
    raw = ins.neighbors(lm, token, top=1, through_norm=False)
    assert raw.unembedded[0].id == token  # tied weights: the raw embedding points at itself


def test_single_token_lists_the_tokens_of_longer_text(lm):
    with pytest.raises(InputError, match=r"'Hullo' is 3 tokens, not one: 'H' \(39\), 'ull' \(724\), 'o' \(78\)"):
        ins.single_token(lm, "Hullo")
    with pytest.raises(InputError, match="outside this model's vocabulary"):
        ins.neighbors(lm, 60000)


def test_steer_with_coef_zero_is_the_plain_continuation(lm):
    st = ins.steer(lm, "I hate you because", " Love", " Hate", layer=1, coef=0.0, max_tokens=8, seed=1)
    assert st.steered == st.plain and st.vector_norms == [0.0, 0.0]
    plain = lm.complete([50256] + lm.prompt_ids("I hate you because"), 8, seed=1)
    assert st.plain.ids == plain.ids and st.prompt_ids[0] == 50256


def test_steering_vector_is_the_padded_difference_and_changes_the_continuation(lm):
    diff, add_ids, sub_ids = ins.steering_vector(lm, " Love", " Hate it", layer=1)
    assert add_ids == [50256, 5896, 220] and sub_ids[0] == 50256 and len(sub_ids) == 3 and diff.shape == (3, 64)
    assert not diff[0].any()  # both start with the start token
    trace = Trace(("blocks.1.resid_pre",))
    lm.forward(add_ids, hooks=trace)
    a = trace["blocks.1.resid_pre"]
    lm.forward(sub_ids, hooks=trace)
    np.testing.assert_array_equal(diff, a - trace["blocks.1.resid_pre"])
    st = ins.steer(lm, "I hate you because", " Love", " Hate", layer=1, coef=5.0, max_tokens=8, seed=1)
    assert st.steered.ids != st.plain.ids and st.vector_norms[0] == 0 and st.vector_norms[1] > 0
    assert st.steered.ids == ins.steer(lm, "I hate you because", " Love", " Hate", layer=1, coef=5.0, max_tokens=8,
                                       seed=1, sampling=Sampling(temperature=1.0)).steered.ids
    with pytest.raises(InputError, match="layer 2 does not exist"):
        ins.steer(lm, "x", "a", "b", layer=2, coef=1.0)


def test_explain_follows_the_last_token(lm, ids):
    ex = ins.explain(lm, ids, top=3)
    assert ex.top == lm.predict(ids, 3) and ex.positions == "learned" and ex.tied
    assert [t.id for t in ex.tokens] == ids and len(ex.tokens[0].embedding) == 4
    assert ex.tokens[0].embedding_norm == pytest.approx(float(np.linalg.norm(lm.weights.embed[ids[0]])))
    trace = Trace()
    lm.forward(ids, hooks=trace)
    for b in ex.blocks:
        row = trace[f"blocks.{b.layer}.attn.pattern"][:, -1]
        assert [h.position for h in b.heads] == row.argmax(-1).tolist()
        assert b.heads[0].weight == pytest.approx(float(row[0].max()))
        assert b.resid_norm == pytest.approx(float(np.linalg.norm(trace[f"blocks.{b.layer}.resid_post"][-1])))
    assert 0 < ex.entropy <= np.log2(ex.n_vocab)


def tiny_llama(gpt2: LanguageModel) -> LanguageModel:
    """A random Llama-shaped model (RMSNorm, rotary, SwiGLU, 4 query heads over 2 key/value heads, untied)
    sharing GPT-2's tokenizer: enough to run every inspect function on the other architecture."""
    rng = np.random.default_rng(0)
    cfg = Config(arch="llama", n_vocab=gpt2.config.n_vocab, n_ctx=64, n_embd=32, n_layer=2, n_head=4, n_kv_head=2,
                 n_ff=48, norm_eps=1e-5, norm="rmsnorm", positions="rotary", mlp="swiglu", d_head=8, rope_theta=10000.0)

    def w(*shape):
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    def ones():
        return Norm(np.ones(cfg.n_embd, np.float32))

    blocks = tuple(Block(ones(), Linear(w((4 + 2 * 2) * 8, 32)), Linear(w(32, 32)), ones(), Linear(w(2 * 48, 32)),
                         Linear(w(32, 48))) for _ in range(cfg.n_layer))
    weights = Weights(embed=w(cfg.n_vocab, 32), pos_embed=None, blocks=blocks, ln_final=ones(), unembed=w(cfg.n_vocab, 32))
    return dataclasses.replace(gpt2, name="tiny-llama", config=cfg, weights=weights)


def test_every_function_works_on_a_llama_shaped_model(lm, ids):
    llama = tiny_llama(lm)
    lens = ins.logit_lens(llama, ids, top=2)
    assert lens.top[-1][-1] == llama.predict(ids, 2)
    att = ins.attention(llama, ids, layer=1)
    np.testing.assert_allclose(att.pattern.sum(-1), 1, atol=1e-5)
    assert att.pattern.shape == (4, 7, 7) and not np.triu(att.pattern[0], 1).any()
    assert len(ins.scan_heads(llama, seq_len=6).heads) == 8
    assert not ins.neighbors(llama, 616, top=2).tied
    ex = ins.explain(llama, ids)
    assert ex.positions == "rotary" and ex.tokens[0].position_norm is None and ex.n_kv_head == 2
    st = ins.steer(llama, "Hullo", " Love", " Hate", layer=1, coef=0.0, max_tokens=4, seed=0)
    assert st.steered == st.plain
