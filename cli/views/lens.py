"""The views of `llmx lens`: the logit lens as a grid of layers by positions, or the top-k at one position."""

from __future__ import annotations

from rich.text import Text

from .common import clip, cut_note, pct, percent, shade, shade_legend, simple_table, visible, wrap


def lens_view(lens, width: int, color: bool) -> list:
    """The logit lens as a grid: rows are layers, columns positions, each cell the top next token."""
    label_w = max(len(name) for name in lens.layers) + 2
    token_w = 8 if color else 6
    cell_w = token_w if color else token_w + 5  # plain cells carry the probability: "·the   45%"
    fit = max(1, (width - label_w + 1) // (cell_w + 1))
    shown = lens.positions[:fit]
    lines = [wrap("What the model would predict next if it stopped after each layer (the logit lens). Columns "
                  "are your tokens; rows go from the embeddings (top) to the last block (bottom), whose guess is "
                  "the model's real prediction.", width), Text()]
    header = Text("position".ljust(label_w)) + Text(" ".join(str(p).ljust(cell_w) for p in shown).rstrip())
    inputs = Text("input".ljust(label_w)) + Text(" ".join(clip(lens.tokens[p], cell_w).ljust(cell_w)
                                                          for p in shown).rstrip())
    lines += [header, inputs, Text("─" * min(width, label_w + len(shown) * (cell_w + 1) - 1))]
    for name, row in zip(lens.layers, lens.top):
        line = Text(name.ljust(label_w))
        for j, cell in enumerate(row[:fit]):
            best = cell[0]
            if j:
                line.append(" ")
            if color:
                line.append(clip(best.token, token_w).ljust(cell_w), style=shade(best.prob))
            else:
                line.append(clip(best.token, token_w).ljust(token_w) + pct(best.prob).rjust(5))
        lines.append(line)
    lines.append(Text())
    lines.append(shade_legend("probability of the top token") if color
                 else wrap("each cell: the most likely next token at that layer and position, and its probability",
                           width))
    if len(lens.positions) > fit:
        lines.append(cut_note("positions", fit, len(lens.positions), "use --position P or a wider terminal", width))
    return lines


def lens_position_view(lens, width: int, color: bool) -> list:
    """The top-k next tokens at every layer for one position."""
    position = lens.positions[0]
    table = simple_table()
    table.add_column("layer", no_wrap=True)
    top = len(lens.top[0][0])
    for rank in range(1, top + 1):
        table.add_column(f"#{rank}", no_wrap=True, overflow="ellipsis")
    for name, row in zip(lens.layers, lens.top):
        cells = [Text(f"{clip(p.token, 10)} {percent(p.prob)}", style=shade(p.prob) if color else "")
                 for p in row[0]]
        table.add_row(name, *cells)
    lines = [wrap(f"After position {position} ({visible(lens.tokens[position])!r}), what the model would predict "
                  "next if it stopped after each layer:", width), table]
    if color:
        lines.append(shade_legend("probability"))
    return lines

