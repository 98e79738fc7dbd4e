"""The view of `llmx score`: the text coloured by surprisal (in colour only), a table per token, the totals."""

from __future__ import annotations

from rich.text import Text

from .common import count, simple_table, visible

# Surprisal in bits, from "the model saw it coming" to "the model was astonished": (upper bound, style).
SURPRISAL_STYLES = ((1, "black on rgb(170,230,170)"), (2, "black on rgb(210,240,170)"),
                    (4, "black on rgb(250,240,160)"), (8, "black on rgb(255,210,150)"),
                    (16, "black on rgb(255,170,140)"), (float("inf"), "white on rgb(190,50,50)"))
UNSCORED_STYLE = "dim"


def surprisal_style(bits: float | None) -> str:
    return UNSCORED_STYLE if bits is None else next(style for bound, style in SURPRISAL_STYLES if bits < bound)


def surprisal_legend() -> Text:
    legend = Text("surprisal in bits: ")
    low = 0
    for bound, style in SURPRISAL_STYLES:
        legend.append(f" {low}–{bound} " if bound != float("inf") else f" ≥{low} ", style=style)
        low = bound
    legend.append("  ")
    legend.append(" not scored ", style=UNSCORED_STYLE)
    return legend


def score_view(data, width: int, color: bool) -> list:
    """A `data.Scores`: in colour the text shaded by surprisal with a legend; then a table and the totals."""
    lines = []
    if color:
        view = Text()
        for t in data.tokens:
            view.append(visible(t.piece), style=surprisal_style(t.bits))
        lines += [view, surprisal_legend()]
    table = simple_table()
    for name in ("index", "id", "token", "logprob", "bits"):
        table.add_column(name, justify="left" if name == "token" else "right")
    for i, t in enumerate(data.tokens):
        table.add_row(str(i), str(t.id), visible(t.piece), "—" if t.logprob is None else f"{t.logprob:.3f}",
                      Text("—" if t.bits is None else f"{t.bits:.2f}", style=surprisal_style(t.bits)))
    return lines + [table, *map(Text, totals(data))]


def totals(data) -> list[str]:
    scored, n = data.scored_tokens, len(data.tokens)
    first = "" if scored == n else " (the first has no context: --bos scores it too)"
    return [f"{scored} of {count(n, 'token')} scored{first}, {count(data.bytes, 'byte')}"
            + (f", in {data.windows} windows" if data.windows > 1 else ""),
            f"mean NLL       {data.mean_nll:.4f} nats/token",
            f"perplexity     {data.perplexity:.2f}",
            f"bits per byte  {data.bits_per_byte:.4f}"]
