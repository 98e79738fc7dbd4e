"""All drawing for people happens here, with Rich: token views and tables on stdout, notices on stderr.

The engine hands over data (ids, pieces, probabilities); these functions only lay it out.
Colour appears only on a terminal and never with NO_COLOR (Rich checks both).
"""

from __future__ import annotations

import io
import math
import re
import sys
import textwrap
from functools import partial

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from .engine.errors import count

TOKEN_STYLES = ("black on rgb(180,210,255)", "black on rgb(255,220,170)", "black on rgb(190,240,190)",
                "black on rgb(250,200,220)")
VISIBLE = {" ": "·", "\n": "↵", "\t": "→", "\r": "␍"}
VISIBLE_TABLE = str.maketrans(VISIBLE)
SPACES_BEFORE_LINE_END = re.compile(r" +\n")


class LineEndsStripped:
    """A text stream that drops the spaces before each line end: Rich pads table cells out to the column's
    width, which a terminal hides but a file or a pipe keeps. Spaces at the end of one write are held back
    until the next shows whether a line end follows them."""

    def __init__(self, stream):
        self.stream = stream
        self.held = ""

    def write(self, text: str) -> int:
        text = self.held + text
        kept = text.rstrip(" ")
        self.held = text[len(kept):]
        self.stream.write(SPACES_BEFORE_LINE_END.sub("\n", kept))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", "utf-8")


def stdout_console(width: int | None = None) -> Console:
    """Rich on stdout, at `width` columns or the terminal's; into a file or a pipe without trailing spaces."""
    console = Console(file=sys.stdout, highlight=False, width=width)
    if not console.is_terminal:
        console.file = LineEndsStripped(sys.stdout)
    return console


def stderr_console() -> Console:
    """Rich on stderr; into a file or a pipe a message stays one line instead of being cut at 80 columns."""
    console = Console(file=sys.stderr, highlight=False)
    console.soft_wrap = not console.is_terminal
    return console



def notice(message: str) -> None:
    stderr_console().print(f"[yellow]warning:[/] {escape(message)}")


def note(message: str) -> None:
    stderr_console().print(f"[dim]note:[/] {escape(message)}")


def visible(piece: bytes | str) -> str:
    """A token's text with whitespace made visible; bytes that are not whole characters as \\xNN."""
    text = piece.decode("utf-8", errors="backslashreplace") if isinstance(piece, bytes) else piece
    text = text.translate(VISIBLE_TABLE)
    return text if text.isprintable() else "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def token_view(shown: list[str], color: bool, first: int = 0) -> Text:
    """Tokens (in their visible form) as text: alternating colours on a terminal, [brackets] without colour.
    `first` is the index of shown[0] in the whole text, so that a view drawn in parts alternates alike."""
    if not color:
        return Text(bracketed(shown))
    view = Text()
    for i, piece in enumerate(shown, first):
        view.append(piece, style=TOKEN_STYLES[i % len(TOKEN_STYLES)])
    return view


def bracketed(shown: list[str]) -> str:
    return "".join(f"[{piece}]" for piece in shown)


TOKENS_AT_ONCE = 10_000  # a long text's tokens are drawn this many at a time, so memory stays bounded


def print_tokens(ids: list[int], pieces: list[bytes]) -> None:
    """The token view (one long line that the terminal wraps), a table of index, id and piece, and the count.

    Both stream out in parts, and the table is laid out here rather than by Rich (which takes ~0.4 ms a row:
    minutes and gigabytes for the million tokens of a 5 MB text)."""
    console = stdout_console()
    color = console.is_terminal and not console.no_color
    distinct = {piece: visible(piece) for piece in set(pieces)}  # a long text repeats a few thousand tokens
    for start in range(0, len(pieces), TOKENS_AT_ONCE):
        shown = [distinct[piece] for piece in pieces[start:start + TOKENS_AT_ONCE]]
        if color:
            console.print(token_view(shown, color, start), soft_wrap=True, end="")
        else:  # token_view's text, written straight out: Rich would scan it for control codes again
            console.file.write(bracketed(shown))
    console.print()
    widths = (max(len("index"), len(str(len(ids) - 1))), max([len("id"), *(len(str(i)) for i in set(ids))]),
              max([len("piece"), *map(cell_len, distinct.values())]))
    console.print(Text(token_row(widths, "index", "id", "piece"), style="table.header"), soft_wrap=True)
    console.print("─" * (sum(widths) + 6), soft_wrap=True)
    for start in range(0, len(ids), TOKENS_AT_ONCE):
        part = range(start, min(start + TOKENS_AT_ONCE, len(ids)))
        console.file.write("".join(token_row(widths, i, ids[i], distinct[pieces[i]]) + "\n" for i in part))
    console.print(count(len(ids), "token"))


def token_row(widths: tuple[int, int, int], index, token_id, piece: str) -> str:
    """A line of the tokens table as `simple_table()` draws it (index and id right-aligned, three spaces
    between columns), but without the spaces that pad the last column (unseen on a terminal)."""
    w_index, w_id, _ = widths
    return f"{index:>{w_index}}   {token_id:>{w_id}}   {piece}"


def simple_table(**options) -> Table:
    """The table style of every view: a rule under the header, no outer edge."""
    return Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, **options)


def predictions_table(predictions, **options) -> Table:
    """rank, id, token, probability and logit of next-token predictions."""
    table = simple_table(**options)
    for name in ("rank", "id", "token", "prob", "logit"):
        table.add_column(name, justify="left" if name == "token" else "right")
    for p in predictions:
        table.add_row(str(p.rank), str(p.id), visible(p.token), percent(p.prob), f"{p.logit:.3f}")
    return table


def print_predictions(predictions, prompt_tokens: int) -> None:
    stdout_console().print(predictions_table(predictions, caption=f"after {count(prompt_tokens, 'prompt token')}",
                                             caption_justify="left"))


def percent(p: float) -> str:
    """12.34% for likely tokens; 3.1e-05% keeps the digits of unlikely ones visible."""
    return f"{p:.2%}" if p >= 1e-4 else f"{p * 100:.1e}%"


def size(n_bytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    raise AssertionError("unreachable")


def print_models(cached, short_names: dict[str, str]) -> None:
    console = stdout_console()
    if cached:
        table = simple_table()
        table.add_column("cached model")
        table.add_column("size", justify="right")
        table.add_column("path")
        for model in cached:
            table.add_row(model.repo_id, size(model.size_on_disk), str(model.snapshot))
        console.print(table)
    else:
        console.print("no models in the Hugging Face cache yet (the first command that needs one downloads it)")
    cached_ids = {model.repo_id for model in cached}
    console.print()
    table = simple_table()
    table.add_column("short name")
    table.add_column("Hub id")
    table.add_column("cached")
    for short, repo in short_names.items():
        table.add_row(short, repo, "yes" if repo in cached_ids else "")
    console.print(table)


def print_description(info: dict) -> None:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in info.items():
        if key == "file_size":
            value = size(value)
        elif key == "parameters":
            value = f"{value:,} ({value / 1e6:.0f}M)"
        table.add_row(key.replace("_", " "), str(value))
    stdout_console().print(table)


# ---------------------------------------------------------------------------------------------
# Inside the model: explain, lens, attention, heads, neighbors, steer.
#
# Each view is `*_view(data, width, color) -> list of renderables`, so that the same drawing goes to
# the terminal (coloured only on a terminal without NO_COLOR) and, coloured, into an SVG file.
# Shading by probability always comes with a legend; without colour the numbers are written instead.

SHADES = ("black on rgb(225,235,250)", "black on rgb(170,200,245)", "black on rgb(110,160,235)",
          "white on rgb(50,100,200)", "white on rgb(15,45,135)")
SHADE_EDGES = (0.1, 0.3, 0.5, 0.8)  # upper bounds of the first four shades
SHADE_LABELS = ("<10%", "10–30%", "30–50%", "50–80%", "≥80%")
SCORE_LABELS = ("<0.1", "0.1–0.3", "0.3–0.5", "0.5–0.8", "≥0.8")  # the same shades for scores written 0–1


def shade(p: float) -> str:
    return SHADES[sum(p >= edge for edge in SHADE_EDGES)]


def shade_legend(what: str, labels: tuple[str, ...] = SHADE_LABELS) -> Text:
    legend = Text(f"{what}: ")
    for style, label in zip(SHADES, labels):
        legend.append(f" {label} ", style=style)
        legend.append(" ")
    return legend


def clip(text: str, width: int) -> str:
    """The visible form of a token, cut to `width` characters with an ellipsis."""
    text = visible(text)
    return text if len(text) <= width else text[:width - 1] + "…"


def pct(p: float) -> str:
    """A whole percentage for a small cell; '<1%' rather than a misleading 0%."""
    return f"{round(p * 100)}%" if p >= 0.005 else "<1%"


def cut_note(what: str, shown: int, total: int, fix: str, width: int) -> Text:
    return wrap(f"{what} 0–{shown - 1} of {total} shown; {fix}", width, style="italic")


SVG_MIN_WIDTH = 80  # columns of an SVG whose view would fit in fewer: its paragraphs wrap there
UNLIMITED = 10_000  # a width at which every view shows all it has


class Prose(Text):
    """A paragraph, wrapped to whatever width the view was given: it never decides how wide a view must be."""


def present(build, svg: str | None = None, *, to_stdout: bool = True, title: str = "llmx",
            width: int | None = None) -> None:
    """Print the view `build(width, color)` on stdout, and save it, coloured, as an SVG when `svg` is a path.

    Both are laid out for `width` columns when it is given. Otherwise stdout takes the terminal's width
    (80 in a pipe), and the SVG the width its view needs to show everything, at least SVG_MIN_WIDTH."""
    if to_stdout:
        console = stdout_console(width)
        color = console.is_terminal and not console.no_color
        for part in build(console.width, color):
            console.print(part)
    if svg:
        recorder = Console(file=io.StringIO(), record=True, width=width or natural_width(build),
                           force_terminal=True, color_system="truecolor", no_color=False, highlight=False)
        for part in build(recorder.width, True):
            recorder.print(part)
        recorder.save_svg(svg, title=title)
        stderr_console().print(f"saved {escape(svg)}")


def natural_width(build) -> int:
    """The columns a view needs to show every grid column and table cell whole: its widest part when laid
    out without limit. Paragraphs and expanding tables take the width they are given, so they do not count."""
    console = Console(file=io.StringIO(), width=UNLIMITED)
    widths = [Measurement.get(console, console.options, part).maximum for part in build(UNLIMITED, True)
              if not isinstance(part, Prose) and not (isinstance(part, Table) and part.expand)]
    return max([SVG_MIN_WIDTH, *widths])


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


def attention_view(att, width: int, color: bool) -> list:
    if len(att.heads) == 1:
        return attention_head_view(att, width, color)
    return attention_heads_view(att, width, color)


def position_labels(tokens: list[str], width: int = 8) -> tuple[list[str], int]:
    digits = len(str(len(tokens) - 1))
    labels = [f"{i:>{digits}} {clip(t, width)}" for i, t in enumerate(tokens)]
    return labels, max(len(label) for label in labels) + 1


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


def neighbors_view(nb, width: int, color: bool) -> list:
    similar = simple_table()
    for name in ("rank", "id", "token", "cosine"):
        similar.add_column(name, justify="left" if name == "token" else "right")
    for rank, n in enumerate(nb.similar, 1):
        similar.add_row(str(rank), str(n.id), visible(n.token), f"{n.similarity:.3f}")
    path = "final norm, then the unembedding" if nb.through_norm else "the unembedding (no final norm)"
    direct = predictions_table(nb.unembedded)
    lines = [Text(f"Token {visible(nb.token)!r} (id {nb.id})"), Text(),
             Text("Nearest tokens by cosine similarity of their embeddings:"), similar, Text(),
             wrap(f"Tokens the embedding itself points to, through {path}:", width), direct]
    if nb.tied:
        lines.append(wrap("This model unembeds with its embedding matrix, so a token's embedding tends to point at "
                          "itself.", width, style="italic"))
    return lines


def steer_view(st, width: int, color: bool) -> list:
    """Steered and plain continuations of the same prompt with the same seed, side by side when they fit."""
    add = "".join(visible(t) for t in st.add_tokens[1:])  # after the start token
    sub = "".join(visible(t) for t in st.sub_tokens[1:])
    norms = ", ".join(f"{x:.1f}" for x in st.vector_norms)
    lines = [wrap(f"Steering vector: ({add!r} − {sub!r}) × {st.coef:g}, the difference of the two prompts' "
                  f"residual streams entering block {st.layer}, each after the start token "
                  f"{visible(st.add_tokens[0])} and padded to {count(len(st.add_tokens), 'token')}. It is added to "
                  f"the prompt's stream there at positions 0–{len(st.vector_norms) - 1} (lengths {norms}); "
                  f"both continuations use seed {st.seed}.", width), Text()]
    texts = []
    for run in (st.steered, st.plain):
        t = Text(st.prompt, style="bold" if color else "")
        t.append(run.text)
        texts.append(t)
    if width >= 80:
        table = simple_table(expand=True)
        table.add_column("steered", ratio=1, overflow="fold")
        table.add_column("plain", ratio=1, overflow="fold")
        table.add_row(*texts)
        lines.append(table)
    else:
        lines += [Text("steered:", style="bold"), texts[0], Text(), Text("plain:", style="bold"), texts[1]]
    return lines


ARCH_WORDS = {"layernorm": "LayerNorm", "rmsnorm": "RMSNorm", "gelu": "GELU", "swiglu": "SwiGLU"}


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
        para("and how much attention and the MLP add to its vector (lengths):"), para(flows), Text(),
        step(4, "The final vector is normalised, scored against every token, and the scores become probabilities.",
             width),
        para(f"Final {ARCH_WORDS[ex.norm]}: length {ex.final_norm:.2f}. Unembedding: a {ex.n_vocab:,} × "
               f"{ex.n_embd} matrix{' (the embedding table again)' if ex.tied else ''} gives one score (logit) "
               f"per token. Softmax: probabilities that add up to 1 (entropy {ex.entropy:.2f} bits; "
               f"{ex.n_vocab:,} equally likely tokens would be {math.log2(ex.n_vocab):.2f})."), Text(),
        step(5, f"The most likely next tokens after {visible(last.token)!r}:", width), para(top)]


def step(n: int, text: str, width: int) -> Text:
    """A numbered heading whose further lines line up with its first word."""
    return wrap(f"{n}. {text}", width, style="bold", hanging=" " * len(f"{n}. "))


def wrap(text: str, width: int, margin: str = "", style: str = "", hanging: str = "") -> Prose:
    """A paragraph wrapped to the width here, so that no line keeps a trailing space; `margin` starts every
    line, `hanging` every line but the first."""
    return Prose(textwrap.fill(text, max(20, width), initial_indent=margin, subsequent_indent=margin + hanging),
                 style=style)


def indent(part, width: int):
    """A paragraph wrapped three spaces in, or a table moved three spaces in."""
    if isinstance(part, str):
        return wrap(part, width, "   ")
    from rich.padding import Padding

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


def print_score(score) -> None:
    """A `Score`: on a terminal the text coloured by surprisal with a legend; then a table and the totals."""
    console = stdout_console()
    if console.is_terminal and not console.no_color:
        view = Text()
        for t in score.tokens:
            view.append(visible(t.piece), style=surprisal_style(t.bits))
        console.print(view)
        console.print(surprisal_legend())
    table = simple_table()
    for name in ("index", "id", "token", "logprob", "bits"):
        table.add_column(name, justify="left" if name == "token" else "right")
    for i, t in enumerate(score.tokens):
        style = surprisal_style(t.bits) if t.bits is not None else UNSCORED_STYLE
        table.add_row(str(i), str(t.id), visible(t.piece), "—" if t.logprob is None else f"{t.logprob:.3f}",
                      Text("—" if t.bits is None else f"{t.bits:.2f}", style=style))
    console.print(table)
    scored = len(score.scored)
    first = "" if scored == len(score.tokens) else " (the first has no context: --bos scores it too)"
    console.print(f"{scored} of {count(len(score.tokens), 'token')} scored{first}, {count(score.n_bytes, 'byte')}"
                  + (f", in {score.windows} windows" if score.windows > 1 else ""))
    console.print(f"mean NLL       {score.mean_nll:.4f} nats/token")
    console.print(f"perplexity     {score.perplexity:.2f}")
    console.print(f"bits per byte  {score.bits_per_byte:.4f}")
