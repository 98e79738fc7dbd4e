"""The views of `llmx attribute` (top components with signed bars, heads by layer, the logit after each block)
and `llmx patch` (heatmaps of the restored fraction, tokens as columns)."""

from __future__ import annotations

from rich.text import Text

from ..engine.interp import accumulated
from .common import clip, cut_note, simple_table, visible, wrap

# Signed values shaded from red (against) through white to blue (for): (upper bound of |value| / scale, style).
POSITIVE = ("black on rgb(225,235,250)", "black on rgb(170,200,245)", "white on rgb(80,130,220)",
            "white on rgb(15,45,135)")
NEGATIVE = ("black on rgb(250,228,225)", "black on rgb(245,180,170)", "white on rgb(215,90,75)",
            "white on rgb(140,25,20)")
EDGES = (0.1, 0.3, 0.6)  # fractions of the scale that separate the four shades


def signed_shade(value: float, scale: float) -> str:
    level = sum(abs(value) >= edge * scale for edge in EDGES) if scale > 0 else 0
    return (POSITIVE if value >= 0 else NEGATIVE)[level]


def signed_legend(scale: float, what: str) -> Text:
    """Each shade labelled with where it starts, going out from 0: "-0.6 -0.3 -0.1 <0  +0 +0.1 +0.3 +0.6"
    (the lightest red is for values below 0, down to the next label)."""
    legend = Text(f"{what}: ")
    for styles, sign in ((NEGATIVE, "-"), (POSITIVE, "+")):
        bounds = (0,) + EDGES
        order = reversed(range(4)) if sign == "-" else range(4)
        for i in order:
            label = "<0" if sign == "-" and i == 0 else f"{sign}{bounds[i] * scale:.2g}"
            legend.append(f" {label} ", style=styles[i])
        legend.append(" ")
    return legend


def bar(value: float, scale: float, half: int = 12) -> Text:
    """A signed bar: left of the axis for negative values, right for positive, `half` cells each way."""
    n = 0 if scale <= 0 else min(half, round(abs(value) / scale * half))
    left, right = ("█" * n if value < 0 else ""), ("█" * n if value >= 0 else "")
    text = Text(left.rjust(half), style="red")
    text.append("│")
    text.append(right.ljust(half), style="blue")
    return text


def what(data) -> str:
    target = f"logit({visible(data.target.token)!r})"
    return target if data.foil is None else f"{target} - logit({visible(data.foil.token)!r})"


def attribute_view(data, width: int, color: bool, top: int = 12) -> list:
    """The `top` components by size, every head (and MLP) by layer, and the value read after each block."""
    token = visible(data.prompt_tokens[data.position])
    lines = [wrap(f"Direct logit attribution of {what(data)} = {data.total:.3f} after position {data.position} "
                  f"({token!r}): each component's share, with the final norm's scale (and the post-norms', in "
                  "models with sandwich norms) frozen at its actual value. The shares add up to the total.", width),
             Text()]
    ranked = sorted(data.components, key=lambda c: -abs(c.value))[:top]
    scale = max((abs(c.value) for c in data.components), default=0.0)
    table = simple_table()
    for name, justify in (("component", "left"), ("value", "right"), ("", "left")):
        table.add_column(name, justify=justify, no_wrap=True)
    for c in ranked:
        table.add_row(c.name, f"{c.value:+.3f}", bar(c.value, scale) if color else plain_bar(c.value, scale))
    lines += [table, Text()]
    lines += head_grid(data, width, color) + [Text()] + accumulation(data, color)
    return lines


def plain_bar(value: float, scale: float, half: int = 12) -> str:
    n = 0 if scale <= 0 else min(half, round(abs(value) / scale * half))
    return ("-" * n if value < 0 else "").rjust(half) + "|" + ("+" * n if value >= 0 else "")


def head_grid(data, width: int, color: bool) -> list:
    """Rows are blocks, columns heads (then the block's MLP): each cell the component's share."""
    cells = {(c.layer, c.head): c.value for c in data.components if c.layer is not None}
    layers = sorted({layer for layer, _ in cells})
    heads = sorted({h for _, h in cells if h is not None})
    scale = max((abs(v) for v in cells.values()), default=0.0)
    cell_w, label_w = 7, 6
    fit = max(1, min(len(heads), (width - label_w - cell_w) // cell_w))
    lines = [wrap("Every head's share by block (rows) and head (columns), and the block's MLP:", width),
             Text(" " * label_w + "".join(f"H{h}".rjust(cell_w) for h in heads[:fit]) + "mlp".rjust(cell_w))]
    for layer in layers:
        line = Text(f"L{layer}".ljust(label_w))
        for key in [(layer, h) for h in heads[:fit]] + [(layer, None)]:
            value = cells.get(key, 0.0)
            line.append(f"{value:+.2f}".rjust(cell_w), style=signed_shade(value, scale) if color else "")
        lines.append(line)
    if color:
        lines.append(signed_legend(scale, "share"))
    if len(heads) > fit:
        lines.append(cut_note("heads", fit, len(heads), "use a wider terminal or --json", width))
    return lines


def accumulation(data, color: bool) -> list:
    """The value read after the embeddings and after each block (scale frozen): where the answer appears."""
    n_layer = 1 + max((c.layer for c in data.components if c.layer is not None), default=-1)
    values = accumulated(data, n_layer)
    scale = max(abs(v) for v in values)
    table = simple_table()
    for name, justify in (("after", "left"), ("value", "right"), ("", "left")):
        table.add_column(name, justify=justify, no_wrap=True)
    for name, value in zip(["embed"] + [f"block {i}" for i in range(n_layer)], values):
        table.add_row(name, f"{value:+.3f}", bar(value, scale) if color else plain_bar(value, scale))
    return [Text(f"{what(data)} read after the embeddings (with the biases and the norm's shift) and after each "
                 "block, the scale frozen:"), table]


def patch_view(data, width: int, color: bool) -> list:
    """Heatmaps of the restored fraction: three layer x position grids, then layer x head."""
    lines = [wrap(f"Activation patching: the corrupted prompt run with one activation from the clean one. "
                  f"LD = {what(data)} at the last position: clean {data.clean_ld:.3f}, corrupted "
                  f"{data.corrupt_ld:.3f}. Each cell: (LD_patched - LD_corrupt) / (LD_clean - LD_corrupt); 0 = no "
                  "effect, 1 = the clean answer fully restored.", width), Text()]
    for site, title in (("resid_pre", "the stream entering each block"), ("attn_out", "each block's attention output"),
                        ("mlp_out", "each block's MLP output")):
        lines += position_grid(data, getattr(data, site), f"{site}: {title}, by position", width, color) + [Text()]
    n_head = len(data.heads[0]) if data.heads else 0
    lines += grid(data.heads, [f"H{h}" for h in range(n_head)], None, "heads: each head's output at every position",
                  width, color)
    if color:
        lines.append(signed_legend(1.0, "restored"))
    return lines


def position_grid(data, values, title: str, width: int, color: bool) -> list:
    """Columns are tokens: the clean prompt's, with the corrupted prompt's where it differs under them."""
    clean = [clip(t, 5) for t in data.clean_tokens]
    corrupt = [clip(b, 5) if a != b else "" for a, b in zip(data.clean_tokens, data.corrupt_tokens)]
    return grid(values, clean, corrupt, title, width, color)


def grid(values, columns: list[str], second: list[str] | None, title: str, width: int, color: bool) -> list:
    cell_w, label_w = 6, 5
    fit = max(1, min(len(columns), (width - label_w) // cell_w))
    lines = [Text(title), Text(" " * label_w + "".join(c.rjust(cell_w) for c in columns[:fit]))]
    if second is not None and any(second):
        lines.append(Text(" " * label_w + "".join(c.rjust(cell_w) for c in second[:fit])))
    for layer, row in enumerate(values):
        line = Text(f"L{layer}".ljust(label_w))
        for value in row[:fit]:
            line.append(f"{value:.2f}".rjust(cell_w), style=signed_shade(value, 1.0) if color else "")
        lines.append(line)
    if len(columns) > fit:
        lines.append(cut_note("columns", fit, len(columns), "use a wider terminal or --json", width))
    return lines
