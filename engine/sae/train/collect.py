"""Collect the residual stream at one layer over the training windows, once, into float16 files on disk.

    acts = collect(lm, corpus.train, layer=15, folder=out / "activations", skip=1, on_progress=bar)
    acts.x       # [n_tokens, n_embd] float16, memory-mapped
    acts.ids     # [n_windows, window] the token ids, for the index of top-activating contexts

The first `skip` positions of every window are left out: the first position of a sequence is the
model's attention sink, whose residual is huge (in SmolLM2 at layer 15 its norm is ~23000 against ~180
for the others), so it would dominate the reconstruction loss and the input scale, and it carries no
information about the text. Other positions can be sinks too; in Gemma 3 a few in a thousand have one
dimension near or beyond float16's largest value (65504), which is stored as inf: such a row's norm is over
any limit, so training, the index and the metrics leave it out with the other sinks (fit.normalizer).

Resumable: the rows are written into a memory-mapped .npy allocated at full size, and `state.json`
records how many windows are done (after they are flushed) together with a key of everything that
decides their content; a killed run started again with the same settings continues where it stopped,
and different settings start afresh.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ...lm import LanguageModel
from .stack import residual

FLUSH_EVERY = 8  # windows between flushes of the rows and updates of state.json


@dataclass(frozen=True)
class Activations:
    x: np.ndarray  # [n_windows * (window - skip), n_embd] float16 residuals, window by window
    ids: np.ndarray  # [n_windows, window] int32 token ids
    skip: int  # positions left out at the start of every window: row r is position skip + r % (window - skip)


def content_key(lm: LanguageModel, windows: np.ndarray, layer: int, skip: int) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(windows).tobytes())
    digest.update(json.dumps([lm.name, str(lm.path), layer, skip, list(windows.shape)]).encode())
    return digest.hexdigest()[:32]


def done_windows(folder: Path, key: str) -> int:
    """Windows already collected by an earlier run with the same key; 0 when none (or other settings)."""
    if not (folder / "resid.npy").exists() or not (folder / "ids.npy").exists():
        return 0
    try:
        state = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError):
        return 0
    return int(state.get("done", 0)) if state.get("key") == key else 0


def open_arrays(folder: Path, shape: tuple[int, int], windows: np.ndarray, resume: bool):
    """The residual rows' memory map (new, or the existing one to continue) and the token ids written beside."""
    from numpy.lib.format import open_memmap

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "resid.npy"
    x = open_memmap(path, mode="r+") if resume else open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
    if not resume:
        np.save(folder / "ids.npy", windows)
    return x


def collect(lm: LanguageModel, windows: np.ndarray, layer: int, folder: Path, skip: int = 1,
            on_progress: Callable[[int, int], None] = lambda done, total: None) -> Activations:
    """The residuals after block `layer` of every window's positions skip.. (see the module's docstring);
    `on_progress(tokens_done, tokens_total)` after each flush."""
    n_windows, width = windows.shape
    per = width - skip
    key = content_key(lm, windows, layer, skip)
    start = done_windows(folder, key)
    x = open_arrays(folder, (n_windows * per, lm.config.n_embd), windows, resume=start > 0)
    on_progress(start * per, n_windows * per)
    for w in range(start, n_windows):
        with np.errstate(over="ignore"):  # beyond float16's 65504 (see the module): inf, a row left out later
            x[w * per:(w + 1) * per] = residual(lm, windows[w], layer)[skip:]  # [per, n_embd] as float16
        if (w + 1) % FLUSH_EVERY == 0 or w + 1 == n_windows:
            x.flush()
            (folder / "state.json").write_text(json.dumps({"key": key, "done": w + 1}))
            on_progress((w + 1) * per, n_windows * per)
    del x
    from numpy.lib.format import open_memmap

    return Activations(open_memmap(folder / "resid.npy", mode="r"), np.load(folder / "ids.npy"), skip)
