"""Prompt-lookup decoding: greedy continuation that guesses its next tokens by copying from the text so far,
then checks all the guesses in one pass.

When the continuation repeats its prompt (an answer quoting a retrieved document, code editing code), the
tokens after the latest earlier occurrence of the last few tokens are a good guess of what comes next. A
pass over [token, guess_1, .., guess_k] gives the model's logits after each of them; guesses are kept while
each equals the model's own greedy choice (the argmax of the row before it), and the row after the last
kept guess gives the next token as always. Every token is still the argmax of the model's logits for
exactly the tokens before it, so the output is plain greedy decoding's; one pass makes up to k + 1 tokens
where plain decoding makes one. (In float32 a pass over several rows sums in another order than a pass over
one, so a near-tie within rounding could in principle resolve the other way, as with a change of thread
count; the tests check equality on tiny models.)

The pass stops at the final states; only the first row is unembedded at once. When the first guess is wrong (the
commonest miss), the other rows' logits, products with the whole vocabulary, are never computed: for SmolLM2
one row's takes 2.5-3.3 ms, 16 rows' 15 ms.

Rejected guesses leave keys and values past the kept positions in the cache; the cache is used with a shorter
length, so they are overwritten. That holds for buffers of every position. A local layer's ring buffer (Gemma 3's
sliding-window layers) holds only the window, and a guess's position takes the slot of one still in it, which
the next token sees: so a check first copies the slots its guesses will take (`Slots`, a few positions' keys
and values per local layer) and puts back those of the rejected guesses. A check then guesses fewer tokens
than the smallest ring holds, so that its positions take distinct slots.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .model import KVCache

# Guessed tokens checked per pass. A pass over a few rows costs little more as rows are added (OpenBLAS streams the
# weights either way): over SmolLM2's blocks 1 row took 23.7 ms, 9 rows 54.5 and 16 rows 61.5 (GPT-2 small 17.7,
# 42.9, 44.7), and a copied answer tends to keep all of its guesses or none. On bench/longctx.py's RAG answers, 15
# made greedy decoding 1.47-1.50x faster, 8 1.42x, 7 1.46x, 23 1.45x, 31 1.35x (alternating runs, one process).
# Row counts that are multiples of 4 cost less than those just under them (SmolLM2's blocks after 300 cached
# positions, medians of 12 alternating rounds: 16 rows 58 ms, 15 rows 72, 12 rows 57, 8 rows 49, 4 rows 41, 1 row 22).
MAX_DRAFT = 15
# Lengths of the text's tail searched for, longest first. `draft` as it is, against guessing after any occurrence
# of the last 3 or 2 tokens and never past the text's end: SmolLM2's greedy decoding with lookup 1.01x as fast on
# bench/longctx.py's three RAG answers (median of 9 alternating rounds, 6 faster), 1.09x on five more questions
# about that context, 1.12x on questions about another, 1.06x on eight prompts without a context, 1.14x on six
# 300-token Shakespeare passages (Gemma 3 270M: 1.04x on the RAG answers, 1.07x on the eight prompts). Same tokens.
NGRAMS = (4, 3, 2)


def draft(context: list[int], k: int = MAX_DRAFT, ngrams: tuple[int, ...] = NGRAMS) -> list[int]:
    """k tokens guessed to follow the context, or [] for no guess. For the first n of `ngrams` whose last n
    tokens occur earlier: [] unless every earlier occurrence was followed by the same token (a tail the text
    went on from in several ways, such as "The" opening a line, is a coin toss that costs a check); else the
    tokens after the latest occurrence followed by k tokens, or where none is (the text has just begun to
    repeat itself) the tokens after the latest occurrence, repeated: a loop's next turns."""
    seq = np.asarray(context, dtype=np.int64)
    if k < 1 or len(seq) < 2:
        return []
    ends = np.flatnonzero(seq[:-1] == seq[-1])  # earlier positions of the last token, where an occurrence may end
    matched = np.ones(len(ends), dtype=np.int64)  # how many of the context's last tokens end at each, to max(ngrams)
    for j in range(1, min(max(ngrams), len(seq) - 1)):  # one token further back from the ends that matched j so far
        grow = (matched == j) & (ends >= j)
        grow[grow] = seq[ends[grow] - j] == seq[-1 - j]
        matched += grow
    for n in ngrams:
        after = ends[matched >= n] + 1  # where the text went on after each earlier occurrence of its last n tokens
        if not len(after):
            continue
        if np.any(seq[after] != seq[after[0]]):
            return []
        whole = after[after + k <= len(seq)]  # occurrences followed by k tokens (a late one may not be)
        start = int(whole[-1] if len(whole) else after[-1])
        return seq[start + np.arange(k) % (len(seq) - start)].tolist()
    return []


def usable(model, req) -> bool:
    """Whether lookup gives exactly plain decoding's tokens: greedy, and no hooks (on the request or the model,
    whose passes must not depend on how positions are split)."""
    hooks = [h for h in (req.hooks, getattr(model, "hooks", None)) if h is not None and h.entries]
    return req.lookup and req.sampling.temperature == 0 and not hooks


class Lookup:
    """The next logits of a greedy run, from passes that check drafted tokens: `next(context, cache)` after the
    context's last token was chosen, in place of `model.forward([token], cache)`."""

    def __init__(self, model, k: int = MAX_DRAFT):
        self.model, self.k = model, k
        self.ahead: list[np.ndarray] = []  # logits already checked for the next positions, in order

    def next(self, context: list[int], cache: KVCache, wanted: int | None = None) -> tuple[np.ndarray, KVCache]:
        """(logits after `context`, cache of `context`), `context[-1]` being the token just chosen greedily.
        `wanted`, how many more tokens the run may make (the one these logits choose included), caps the
        guesses: rows past the run's last token would be computed for nothing."""
        if self.ahead:  # the chosen token was a kept guess: its logits are known, its keys already cached
            return self.ahead.pop(0), dataclasses.replace(cache, length=cache.length + 1)
        # the check's positions L..L+k must fit the context, and take distinct slots of every ring buffer
        room = min([self.model.config.n_ctx - cache.length, *Slots.sizes(cache, self.model)]) - 1
        guesses = draft(context, min(self.k, room, self.k if wanted is None else wanted - 1))
        if not guesses:
            return self.model.forward(context[-1:], cache)
        taken = Slots.of(cache, self.model, cache.length + 1, len(guesses))  # the guesses' slots in ring buffers
        states, after = self.model.forward([context[-1], *guesses], cache, all_logits=True, states=True)
        rows = self.model.unembed(states[:1])  # [1, n_vocab]: a wrong first guess, the commonest miss, needs no more
        if np.argmax(rows[0]) == guesses[0]:
            rows = np.concatenate([rows, self.model.unembed(states[1:])])  # [1 + k, n_vocab]
        kept = agreeing(rows, guesses)
        taken.put_back(after, kept)
        self.ahead = list(rows[1:kept + 1])
        return rows[0], dataclasses.replace(after, length=cache.length + 1)


@dataclasses.dataclass(frozen=True)
class Slots:
    """Copies of the keys and values in the ring-buffer slots that positions start.. will take, in every local
    layer, so that those of rejected guesses can be put back."""

    layers: tuple[int, ...]  # the local layers
    slots: tuple[np.ndarray, ...]  # per local layer, the slot of each position start, start + 1, ..
    keys: tuple[np.ndarray, ...]  # per local layer, the slots' keys [n_kv_head, n, d_head] before the pass
    values: tuple[np.ndarray, ...]

    @staticmethod
    def sizes(cache: KVCache, model) -> list[int]:
        """How many positions each local layer's ring buffer holds."""
        return [cache.k[i].shape[1] for i in model.config.local_layers]

    @classmethod
    def of(cls, cache: KVCache, model, start: int, n: int) -> Slots:
        layers = tuple(model.config.local_layers)
        slots = tuple((start + np.arange(n)) % cache.k[i].shape[1] for i in layers)
        return cls(layers, slots, tuple(cache.k[i][:, s] for i, s in zip(layers, slots)),
                   tuple(cache.v[i][:, s] for i, s in zip(layers, slots)))

    def put_back(self, cache: KVCache, kept: int) -> None:
        """Restore the slots of the positions after the first `kept` (the rejected guesses') in cache's buffers."""
        for i, slots, keys, values in zip(self.layers, self.slots, self.keys, self.values):
            cache.k[i][:, slots[kept:]], cache.v[i][:, slots[kept:]] = keys[:, kept:], values[:, kept:]


def agreeing(rows: np.ndarray, guesses: list[int]) -> int:
    """How many leading guesses are the greedy choice of the row before them (rows[i] comes before guesses[i]);
    rows may stop short, after a guess they reject."""
    choices = np.argmax(rows[:len(guesses)], axis=-1)
    wrong = np.flatnonzero(choices != np.asarray(guesses[:len(choices)]))
    return int(wrong[0]) if len(wrong) else len(choices)
