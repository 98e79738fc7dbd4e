"""The view of `llmx explain`: one prediction step by step, short plain sentences between the numbers."""

from __future__ import annotations

import math
from functools import partial

from rich.padding import Padding
from rich.text import Text

from .common import clip, count, cut_note, pct, predictions_table, shade, shade_legend, simple_table, visible, wrap

ARCH_WORDS = {"layernorm": "LayerNorm", "rmsnorm": "RMSNorm", "gelu": "GELU", "swiglu": "SwiGLU", "geglu": "GeGLU"}


def explain_view(ex, width: int, color: bool) -> list:
    """One prediction step by step: short plain sentences between the numbers."""
    last = ex.tokens[-1]
    tokens = simple_table()
    for name in ("pos", "token", "id", "first numbers of its embedding", "|embedding|", "|position|"):
        tokens.add_column(name, justify="left" if name in ("token", "first numbers of its embedding") else "right")
    for t in ex.tokens:
        numbers = " ".join(f"{x:+.3f}" for x in t.embedding) + " …"
        tokens.add_row(str(t.position), visible(t.token), str(t.id), numbers,
                       f"{t.embedding_norm:.2f}", "rotary" if t.position_norm is None else f"{t.position_norm:.2f}")
    if ex.positions == "learned":
        where = "Word order comes from a second, learned vector for each position, added to it (|position|)."
    else:
        where = ("Word order is not added here: positions are rotary, applied inside attention by rotating "
                 "each head's queries and keys by an angle that grows with the position.")
    flows = simple_table()
    for name in ("block", "|attention adds|", "|MLP adds|", "|stream| after"):
        flows.add_column(name, justify="right")
    for b in ex.blocks:
        flows.add_row(str(b.layer), f"{b.attn_norm:.2f}", f"{b.mlp_norm:.2f}", f"{b.resid_norm:.2f}")
    top = predictions_table(ex.top)
    para = partial(indent, width=width)
    kv = f" (sharing {count(ex.n_kv_head, 'key/value head')})" if ex.n_kv_head != ex.n_head else ""
    heads = "the attention head" if ex.n_head == 1 else f"each of the {ex.n_head} attention heads"
    return [
        step(1, f"Your text becomes {count(len(ex.tokens), 'token')}.", width),
        para(f"The model never sees letters, only these ids, from a vocabulary of {ex.n_vocab:,} pieces."), Text(),
        step(2, f"Each token is looked up in an embedding table: a list of {ex.n_embd} numbers that stands for it.",
             width),
        para(f"{where} |x| is a vector's length."), para(tokens),
        para(f"The last token's vector entering block 0 has length {ex.input_norm:.2f}."), Text(),
        step(3, f"The vectors pass through {count(ex.n_layer, 'block')}, each adding to every token's vector.",
             width),
        para("In a block, attention lets each token read from itself and earlier tokens, then an MLP reworks "
               "what it has; both add their result to the token's running vector (the residual stream). "
               f"Following the last token, {visible(last.token)!r}, whose vector becomes the prediction: "
               f"where {heads}{kv} looks most,"),
        *explain_heads(ex, width - 3, color),
        para("and how much attention and the MLP add to its vector (lengths):"), para(flows),
        *differences(ex, para), Text(),
        step(4, "The final vector is normalised, scored against every token, and the scores become probabilities.",
             width),
        para(f"Final {ARCH_WORDS[ex.norm]}: length {ex.final_norm:.2f}. Unembedding: a {ex.n_vocab:,} × "
               f"{ex.n_embd} matrix{' (the embedding table again)' if ex.tied else ''} gives one score (logit) "
               f"per token. Softmax: probabilities that add up to 1 (entropy {ex.entropy:.2f} bits; "
               f"{ex.n_vocab:,} equally likely tokens would be {math.log2(ex.n_vocab):.2f})."), Text(),
        step(5, f"The most likely next tokens after {visible(last.token)!r}:", width), para(top)]


def differences(ex, para) -> list:
    """What this model's blocks do beyond GPT-2's: sandwich norms and sliding-window attention."""
    notes = []
    if ex.post_norms:
        notes.append(f"In this model each result is normalised again ({ARCH_WORDS[ex.norm]}) before it is added, "
                     "not only its input (\"sandwich\" norms, unlike GPT-2's).")
    if ex.sliding_window is not None:
        full = [b for b in range(ex.n_layer) if b not in ex.local_layers]
        notes.append(f"Only blocks {', '.join(map(str, full))} let a token read the whole text; the other "
                     f"{len(ex.local_layers)} see just the last {ex.sliding_window:,} tokens (a sliding window), so "
                     "they keep only that many in memory however long the text (GPT-2's blocks all see everything).")
    return [para(" ".join(notes))] if notes else []


def step(n: int, text: str, width: int) -> Text:
    """A numbered heading whose further lines line up with its first word."""
    return wrap(f"{n}. {text}", width, style="bold", hanging=" " * len(f"{n}. "))




def indent(part, width: int):
    """A paragraph wrapped three spaces in, or a table moved three spaces in."""
    if isinstance(part, str):
        return wrap(part, width, "   ")
    return Padding(part, (0, 0, 0, 3), expand=False)


def explain_heads(ex, width: int, color: bool) -> list:
    """Rows are blocks, columns heads: the token each head of the last position attends to most, and how much."""
    label_w, cell_w = len(f"block {ex.n_layer - 1}") + 2, 11  # "·name   45%"
    fit = max(1, min(ex.n_head, (width - label_w + 1) // (cell_w + 1)))
    lines = [Text(" " * label_w + " ".join(f"head {h}".ljust(cell_w) for h in range(fit)).rstrip())]
    for b in ex.blocks:
        line = Text(f"block {b.layer}".ljust(label_w))
        for h in b.heads[:fit]:
            if h.head:
                line.append(" ")
            line.append(clip(h.token, 6).ljust(7) + pct(h.weight).rjust(4), style=shade(h.weight) if color else "")
        lines.append(line)
    if color:
        lines.append(shade_legend("attention on that token"))
    if ex.n_head > fit:
        lines.append(cut_note("heads", fit, ex.n_head, "see them all with llmx attention TEXT --layer L",
                              width))
    return [indent(line, width) for line in lines]

