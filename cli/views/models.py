"""The views of `llmx models` (the cache and the short names) and `llmx models show` (one model's facts)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from .common import simple_table


def size(n_bytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    raise AssertionError("unreachable")


def models_view(data, width: int, color: bool) -> list:
    """A `data.Models`: the cached models with their size and path, then the short names llmx knows."""
    if data.cached:
        cached = simple_table()
        for name in ("cached model", "size", "path"):
            cached.add_column(name, justify="right" if name == "size" else "left")
        for model in data.cached:
            cached.add_row(model.id, size(model.size_on_disk), model.path)
    else:
        cached = Text("no models in the Hugging Face cache yet (the first command that needs one downloads it)")
    ids = {model.id for model in data.cached}
    short = simple_table()
    for name in ("short name", "Hub id", "cached"):
        short.add_column(name)
    for name, repo in data.short_names.items():
        short.add_row(name, repo, "yes" if repo in ids else "")
    return [cached, Text(), short]


def description_view(info: dict, width: int, color: bool) -> list:
    """What `describe` found out about a model, one fact a line."""
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in info.items():
        if key == "file_size":
            value = size(value)
        elif key == "parameters":
            value = f"{value:,} ({value / 1e6:.0f}M)"
        table.add_row(key.replace("_", " "), str(value))
    return [table]
