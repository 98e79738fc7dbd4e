"""llmx_index.safetensors: each latent's top-activating contexts, activation density and histogram.

Built by `llmx sae train` from one pass of the trained SAE over its training tokens, so that exploring
(`llmx feature`) needs no second pass over the corpus; `read_index(folder)` reads it back.

    top_acts   float32 [d_sae, n_top]          strongest first; 0 where a latent has fewer examples
    top_tokens int32   [d_sae, n_top, width]   token ids of a window around the activating token, -1 = none
    top_center int32   [d_sae, n_top]          index inside the window of the activating token
    density    float32 [d_sae]                 fraction of scanned tokens where the latent is > 0
    hist       int64   [d_sae, n_bins]         its nonzero activations in n_bins equal bins of [0, top_acts[:, 0]]
    __metadata__: tokens (scanned), window_before, window_after, model
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from ..formats.safetensors import DTYPES, read_header, read_metadata
from .write import write_tensors

INDEX_FILE = "llmx_index.safetensors"


@dataclass(frozen=True)
class Index:
    top_acts: np.ndarray  # [d_sae, n_top] float32, strongest first
    top_tokens: np.ndarray  # [d_sae, n_top, width] int32 token ids, -1 = none
    top_center: np.ndarray  # [d_sae, n_top] int32 position of the activating token in its window
    density: np.ndarray  # [d_sae] float32
    hist: np.ndarray  # [d_sae, n_bins] int64
    tokens: int  # tokens scanned
    window_before: int  # tokens shown before the activating one
    window_after: int  # and after it
    model: str  # the model the SAE reads (the -m value)


@dataclass(frozen=True)
class Firings:
    """Every nonzero activation of a scan: token t (row of the scanned activations), latent, value."""
    token: np.ndarray  # [n_fired] int64
    latent: np.ndarray  # [n_fired] int64
    act: np.ndarray  # [n_fired] float32


def strongest(f: Firings, d_sae: int, n_top: int) -> tuple[np.ndarray, np.ndarray]:
    """Per latent, the indices into `f` of its n_top largest activations, strongest first, -1 where it
    has fewer: [d_sae, n_top]."""
    order = np.lexsort((-f.act, f.latent))  # by latent, then strongest first
    latent = f.latent[order]
    first = np.searchsorted(latent, np.arange(d_sae))  # where each latent's run starts
    rank = np.arange(len(order)) - first[latent]
    keep = rank < n_top
    out = np.full((d_sae, n_top), -1, np.int64)
    out[latent[keep], rank[keep]] = order[keep]
    return out


def contexts(token: np.ndarray, ids: np.ndarray, skip: int, before: int, after: int) -> np.ndarray:
    """Token ids around scanned token rows `token` [...]: [..., before + 1 + after], -1 outside the window.
    Row t is position skip + t % (window - skip) of window t // (window - skip) of `ids` [n_windows, window]."""
    per = ids.shape[1] - skip
    row, pos = token // per, skip + token % per
    at = pos[..., None] + np.arange(-before, after + 1)  # [..., width]
    inside = (at >= 0) & (at < ids.shape[1])
    return np.where(inside, ids[row[..., None], np.clip(at, 0, ids.shape[1] - 1)], -1).astype(np.int32)


def histogram(f: Firings, peak: np.ndarray, n_bins: int) -> np.ndarray:
    """Counts of each latent's activations in n_bins equal bins of [0, peak[latent]]: [d_sae, n_bins]."""
    scaled = f.act / np.maximum(peak[f.latent], 1e-30)
    bins = np.minimum((scaled * n_bins).astype(np.int64), n_bins - 1)
    return np.bincount(f.latent * n_bins + bins, minlength=len(peak) * n_bins).reshape(len(peak), n_bins)


def build_index(f: Firings, d_sae: int, n_tokens: int, ids: np.ndarray, skip: int, model: str, n_top: int = 16,
                before: int = 12, after: int = 4, n_bins: int = 24) -> Index:
    """The index of a scan of n_tokens tokens whose nonzero activations are `f`."""
    best = strongest(f, d_sae, n_top)  # [d_sae, n_top]
    has = best >= 0
    top_acts = np.where(has, f.act[np.maximum(best, 0)], 0).astype(np.float32)
    tokens = np.where(has[..., None], contexts(f.token[np.maximum(best, 0)], ids, skip, before, after), -1)
    center = np.where(has, before, 0).astype(np.int32)
    density = (np.bincount(f.latent, minlength=d_sae) / max(n_tokens, 1)).astype(np.float32)
    return Index(top_acts, tokens.astype(np.int32), center, density, histogram(f, top_acts[:, 0], n_bins),
                 n_tokens, before, after, model)


def write_index(folder: Path, index: Index) -> None:
    write_tensors(folder / INDEX_FILE, {
        "top_acts": index.top_acts, "top_tokens": index.top_tokens, "top_center": index.top_center,
        "density": index.density, "hist": index.hist.astype(np.int64)},
        {"tokens": str(index.tokens), "window_before": str(index.window_before),
         "window_after": str(index.window_after), "model": index.model})


def read_index(folder) -> Index | None:
    """The index in `folder`, or None when the folder has none (an SAE trained elsewhere)."""
    path = Path(folder) / INDEX_FILE
    if not path.is_file():
        return None
    header, start = read_header(path)
    data = np.memmap(path, dtype=np.uint8, mode="r")
    arrays = {name: np.array(data[start + info["data_offsets"][0]:start + info["data_offsets"][1]]
                             .view(DTYPES[info["dtype"]]).reshape(info["shape"])) for name, info in header.items()}
    missing = [name for name in ("top_acts", "top_tokens", "top_center", "density", "hist") if name not in arrays]
    if missing:
        raise CheckpointError(f"{path} has no tensor {missing[0]!r}: train the SAE again with `llmx sae train`, "
                              "or delete the file to explore without an index")
    meta = read_metadata(path)
    return Index(arrays["top_acts"], arrays["top_tokens"], arrays["top_center"], arrays["density"],
                 arrays["hist"], int(meta.get("tokens", 0)), int(meta.get("window_before", 0)),
                 int(meta.get("window_after", 0)), meta.get("model", ""))
