"""`llmx sae train` as one function: corpus, collection, training, scan and index, metrics, the folder.

    metrics = train_sae(lm, ["plays/"], None, Path("sae"), TrainOptions(layer=15, k=32), stage=progress)

`stage(what)` is a context manager giving the progress callback `(done, total)` of one stage (the CLI
draws a bar); the engine itself shows nothing.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ...errors import InputError
from ...lm import LanguageModel
from ..index import build_index, write_index
from ..write import write_sae
from .collect import collect
from .corpus import load_corpus
from .fit import FitOptions, fit, fold
from .metrics import Metrics, evaluate, scan
from .stack import check_layer


@dataclass(frozen=True)
class TrainOptions:
    layer: int  # the SAE reads blocks.{layer}.hook_resid_post
    k: int = 32  # active latents per token
    latents: int | None = None  # the SAE's width; None: expansion * d_model
    expansion: int = 16
    tokens: int | None = None  # training tokens to collect (at most); None: all the training text
    lr: float = 3e-3
    batch: int = 512
    epochs: float = 4.0
    seed: int = 0
    window: int | None = None  # tokens per sequence the model reads; None: 256, or the model's context
    skip: int = 1  # positions left out at the start of each window (the attention sink: see collect.py)
    valid_fraction: float = 0.1  # of the files held out (of the windows, with a single file) without `valid`
    valid_tokens: int = 8192  # held-out tokens measured (each costs about two forward passes)


def no_stage(what: str):
    return nullcontext(lambda done, total: None)


def resolved(lm: LanguageModel, opts: TrainOptions) -> TrainOptions:
    """The options with the SAE's width and the window filled in, checked: a clear error for each bad value."""
    check_layer(lm, opts.layer)
    window = opts.window or min(256, lm.config.n_ctx)
    if not opts.skip + 2 <= window <= lm.config.n_ctx:
        raise InputError(f"--window must be between {opts.skip + 2} and the model's context ({lm.config.n_ctx})")
    latents = opts.latents or opts.expansion * lm.config.n_embd
    if not 0 < opts.k < latents:
        raise InputError(f"--k {opts.k} must be between 1 and the number of latents ({latents}) less one")
    return replace(opts, latents=latents, window=window)


def spread(windows: np.ndarray, n: int) -> np.ndarray:
    """n windows spread evenly over `windows` (all of them when there are fewer)."""
    if n >= len(windows):
        return windows
    return windows[np.linspace(0, len(windows) - 1, n).round().astype(int)]


def train_sae(lm: LanguageModel, data: list[str], valid: list[str] | None, out: Path, opts: TrainOptions,
              stage: Callable = no_stage) -> Metrics:
    """Train, measure and write the SAE into `out` (activations collected go to out/activations)."""
    opts = resolved(lm, opts)
    latents, per = opts.latents, opts.window - opts.skip
    corpus = load_corpus(data, valid, lm.tokenizer, opts.window, opts.valid_fraction, opts.seed)
    train = corpus.train[:math.ceil(opts.tokens / per)] if opts.tokens else corpus.train
    started = time.perf_counter()
    with stage(f"collecting layer {opts.layer}") as bar:
        acts = collect(lm, train, opts.layer, out / "activations", opts.skip, bar)
    collected = time.perf_counter()
    fit_opts = FitOptions(latents=latents, k=opts.k, lr=opts.lr, batch=opts.batch, epochs=opts.epochs, seed=opts.seed)
    with stage("training") as bar:
        params, norm = fit(acts.x, fit_opts, lambda p: bar(p.step, p.steps))
    raw = fold(params, norm)
    trained = time.perf_counter()
    with stage("indexing") as bar:
        firings, scanned = scan(raw, opts.k, acts.x, norm.max_norm, bar)
    index = build_index(firings, latents, scanned, acts.ids, acts.skip, lm.name)
    dead = float((index.density == 0).mean())
    with stage("measuring on held-out text") as bar:
        held = spread(corpus.valid, math.ceil(opts.valid_tokens / per))
        metrics = evaluate(lm, raw, opts.k, opts.layer, held, opts.skip, norm.max_norm, dead, scanned, bar)
    seconds = {"collect": collected - started, "train": trained - collected, "total": time.perf_counter() - started}
    llmx = {"options": asdict(opts), "metrics": metrics.as_dict(), "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "train_files": list(corpus.train_files), "valid_files": list(corpus.valid_files),
            "valid_tokens": int(len(held) * per), "input_mean_norm": float(np.linalg.norm(norm.mean)),
            "input_scale": norm.scale, "sink_norm": norm.max_norm}
    write_sae(out, raw, opts.k, f"blocks.{opts.layer}.hook_resid_post", lm.name, index.density, llmx,
              prepend_bos=corpus.starts_with_bos)
    write_index(out, index)
    return metrics
