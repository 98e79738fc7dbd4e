"""The views of `llmx features` (latents per token), `llmx feature` (a latent's card) and `llmx steer --feature`."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from .common import count, percent, simple_table, visible, wrap
from .steer import side_by_side

SPARK = "▁▂▃▄▅▆▇█"
HIGHLIGHT = "bold black on rgb(255,200,90)"


def features_view(data, width: int, color: bool) -> list:
    """One row per token: its position, the token, and its strongest latents as `id act` (position 0, the
    attention sink, marked when its latents are left out)."""
    table = simple_table()
    table.add_column("#", justify="right")
    table.add_column("token", overflow="fold")
    table.add_column("latents (activation), strongest first", overflow="fold")
    for t in data.tokens:
        cell = Text()
        for i, f in enumerate(t.features):
            cell.append("  " if i else "")
            cell.append(str(f.id), style="bold" if color else "")
            cell.append(f" {f.act:.2f}")
        if not t.features:
            sink = t.index == 0 and data.sink_left_out
            cell = Text("attention sink: left out (--sink shows it)", style="dim" if color else "") if sink \
                else Text("–")
        table.add_row(str(t.index), visible(t.text), cell)
    head = wrap(f"Latents of the SAE {data.sae} at {data.hook}, for each of {count(len(data.tokens), 'token')}:",
                width)
    return [head, Text(), table]


def context_text(context, color: bool) -> Text:
    """A context's tokens with the activating one highlighted (in «» without colour), newlines shown as ↵."""
    text = Text()
    for i, token in enumerate(context.tokens):
        shown = token.replace("\n", "↵").replace("\t", "→").replace("\r", "␍")
        if i == context.center:
            text.append(shown if color else f"«{shown}»", style=HIGHLIGHT if color else "")
        else:
            text.append(shown)
    return text


def contexts_table(card, color: bool) -> Table:
    table = simple_table()
    table.add_column("act", justify="right", no_wrap=True)
    table.add_column("context", overflow="fold")
    for context in card.contexts:
        table.add_row(f"{context.act:.2f}", context_text(context, color))
    return table


def outputs_table(card) -> Table:
    """Raised and lowered output tokens side by side."""
    table = simple_table()
    for name, justify in (("raises", "left"), ("", "right"), ("lowers", "left"), (" ", "right")):
        table.add_column(name, justify=justify)
    for up, down in zip(card.positive, card.negative):
        table.add_row(visible(up.token), f"{up.value:+.2f}", visible(down.token), f"{down.value:+.2f}")
    return table


def sparkline(counts: list[int]) -> str:
    """One block per bin, the fullest bin a full block; an empty bin is a space."""
    top = max(counts) or 1
    return "".join(" " if c == 0 else SPARK[-(-c * len(SPARK) // top) - 1] for c in counts)


def density_line(card) -> str:
    where = {"index": "the SAE's index", "data": "the scanned text", "none": "sparsity.safetensors"}[card.source]
    if card.density is None:
        return "Density: unknown (no index in the SAE's folder: scan some text with --data FILE)."
    scanned = f" of {card.tokens:,} tokens" if card.tokens else ""
    if card.density == 0:
        return f"Never fires in {card.tokens:,} tokens (from {where})."
    return f"Fires on {percent(card.density)}{scanned} (from {where})."


def feature_view(card, width: int, color: bool) -> list:
    """The card: header and density, top contexts, output tokens, the activation histogram."""
    lines = [Text(f"Feature {card.feature} of {card.d_sae:,}", style="bold"),
             wrap(f"SAE {card.sae} at {card.hook}. {density_line(card)}", width), Text()]
    if card.contexts:
        lines += [Text("Top-activating contexts:"), contexts_table(card, color), Text()]
    elif card.source != "none":
        lines += [Text("It never fires in the scanned tokens."), Text()]
    if card.positive:
        lines += [wrap("Output tokens: its decoder direction through the final norm's scale and the unembedding "
                       "(logit change per unit of activation):", width), outputs_table(card), Text()]
    else:
        lines += [wrap("No output tokens: the SAE does not read the residual stream, which the unembedding reads.",
                       width), Text()]
    if card.histogram:
        edges, counts = card.histogram.edges, card.histogram.counts
        lines += [Text(f"Activations when it fires ({sum(counts):,} token{'' if sum(counts) == 1 else 's'}, {len(counts)} bins):"),
                  Text(f"{edges[0]:.2f} {sparkline(counts)} {edges[-1]:.2f}")]
    return lines


def feature_steer_view(st, width: int, color: bool) -> list:
    """Steered and plain continuations, side by side when they fit."""
    lines = [wrap(f"Steering with feature {st.feature} of {st.sae}: {st.coef:g} × its decoder direction (length "
                  f"{st.vector_norm:.1f}) added at {st.hook} at every position; both continuations use seed "
                  f"{st.seed}.", width), Text()]
    return lines + side_by_side(st, width, color)
