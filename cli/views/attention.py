"""The views of `llmx attention` (one head as a heatmap, or every head of a block) and `llmx heads`."""

from __future__ import annotations

from rich.text import Text

from .common import SCORE_LABELS, cut_note, pct, position_labels, shade, shade_legend, simple_table, wrap


def attention_view(att, width: int, color: bool) -> list:
    if len(att.heads) == 1:
        return attention_head_view(att, width, color)
    return attention_heads_view(att, width, color)



def attention_head_view(att, width: int, color: bool) -> list:
    """One head as a heatmap: rows are the tokens attending (destinations), columns the tokens read (sources)."""
    pattern, n = att.pattern[0], len(att.tokens)
    labels, label_w = position_labels(att.tokens)
    cell_w = max(3, len(str(n - 1)) + 1)
    fit = max(1, min(n, (width - label_w) // cell_w))
    lines = [wrap(f"Block {att.layer}, head {att.heads[0]}: how much each token (row) reads from each earlier "
                  "token (column), in percent; each row adds up to 100%.", width), Text()]
    lines.append(Text(" " * label_w + "".join(str(s).rjust(cell_w) for s in range(fit))))
    for dest in range(fit):
        line = Text(labels[dest].ljust(label_w))
        for src in range(dest + 1):
            weight = float(pattern[dest, src])
            line.append(str(round(weight * 100)).rjust(cell_w), style=shade(weight) if color else "")
        lines.append(line)
    lines.append(Text())
    lines.append(shade_legend("attention") if color else Text("blank: a token cannot read later tokens"))
    if n > fit:
        lines.append(cut_note("positions", fit, n, "use a wider terminal or a shorter text", width))
    return lines


def attention_heads_view(att, width: int, color: bool) -> list:
    """Every head of a block at once: for each token and head, the position read most and how much."""
    n = len(att.tokens)
    labels, label_w = position_labels(att.tokens)
    cell_w = len(str(n - 1)) + 6  # "→12 100%"
    fit = max(1, min(len(att.heads), (width - label_w + 1) // (cell_w + 1)))
    lines = [wrap(f"Block {att.layer}: for each token (row) and head (column), the earlier token that head reads "
                  "most, and how much of its attention goes there (→3 45%: 45% on position 3).", width), Text()]
    lines.append(Text(" " * label_w + " ".join(f"H{h}".rjust(cell_w) for h in att.heads[:fit])))
    for dest in range(n):
        line = Text(labels[dest].ljust(label_w))
        for j in range(fit):
            row = att.pattern[j, dest]
            src = int(row.argmax())
            if j:
                line.append(" ")
            line.append(f"→{src} {pct(float(row[src]))}".rjust(cell_w), style=shade(float(row[src])) if color else "")
        lines.append(line)
    lines.append(Text())
    if color:
        lines.append(shade_legend("attention on that token"))
    if len(att.heads) > fit:
        lines.append(cut_note("heads", fit, len(att.heads), "use --head H or a wider terminal", width))
    return lines


def heads_view(scan, width: int, color: bool) -> list:
    """Heads sorted by induction score, with their scores on the control sequence beside them."""
    names = ("layer.head", "induction", "previous", "duplicate", "│", "control: induction", "previous", "duplicate")
    roomy = sum(map(len, names)) + 3 * (len(names) - 1) <= width  # the headers are wider than the scores
    table = simple_table(padding=(0, 1) if roomy else (0, 0))  # one space between columns fits 80
    for name in names:
        table.add_column(name, justify="left" if name in ("layer.head", "│") else "right", no_wrap=True)
    for s in scan.heads:
        scores = (s.induction, s.previous, s.duplicate, s.control_induction, s.control_previous, s.control_duplicate)
        cells = [Text(f"{x:.2f}", style=shade(x) if color else "") for x in scores]
        table.add_row(f"{s.layer}.{s.head}", *cells[:3], "│", *cells[3:])
    return [wrap(f"Each head's average attention on {scan.seq_len} random tokens repeated twice (seed {scan.seed}), "
                 "strongest induction first:", width),
            wrap("induction: from a repeated token to the token that followed its first copy (copies patterns);",
                 width, "  "),
            wrap("previous: to the token just before; duplicate: to the earlier copy of the same token.", width, "  "),
            wrap(f"The control is {2 * scan.seq_len} random tokens that never repeat: real induction and duplicate "
                 "heads score near 0 there.", width), Text(),
            table] + ([shade_legend("score", SCORE_LABELS)] if color else [])

