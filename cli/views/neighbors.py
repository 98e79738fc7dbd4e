"""The view of `llmx neighbors`: a token's nearest embeddings, and what its embedding alone predicts."""

from __future__ import annotations

from rich.text import Text

from .common import predictions_table, simple_table, visible, wrap


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
