"""LoRA: low-rank adapters on the Hugging Face modules of each block's linear layers, and merging them in.

The engine fuses q, k, v into w_qkv and gate, up into w_in; an adapter belongs to one Hugging Face module
(q_proj, ...), so it adds to that module's slice of the fused layer's output rows (see `net.dense_forward`).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..model import Config
from .hfnames import module_slices
from .net import Lora


def all_modules(cfg: Config) -> list[str]:
    """The short names of every linear module in a block, as PEFT's `all-linear`: q_proj, ... or c_attn, ..."""
    return sorted({path.rsplit(".", 1)[1] for parts in module_slices(cfg).values() for path, _, _ in parts})


def lora_spec(cfg: Config, rank: int, alpha: float, targets=None, last_blocks: int | None = None) -> Lora:
    """Which slices get adapters: modules named in `targets` (default: all) in the last `last_blocks` blocks."""
    known = all_modules(cfg)
    targets = list(targets or known)
    unknown = [t for t in targets if t not in known]
    if unknown:
        raise InputError(f"no module {unknown[0]!r} in a {cfg.arch} block: choose from {', '.join(known)}")
    first = 0 if last_blocks is None else max(cfg.n_layer - last_blocks, 0)
    slices = {}
    for lin, parts in module_slices(cfg).items():
        for i in range(first, cfg.n_layer):
            chosen = tuple((path.rsplit(".", 1)[1], lo, hi, path.format(i=i)) for path, lo, hi in parts
                           if path.rsplit(".", 1)[1] in targets)
            if chosen:
                slices[f"blocks.{i}.{lin}"] = chosen
    return Lora(rank=rank, alpha=alpha, slices=slices)


def init_adapters(params: dict, lora: Lora, rng: np.random.Generator) -> list[str]:
    """Add each adapter's A (uniform in +-1/sqrt(in), PEFT's Kaiming init) and B (zeros, so training starts at the
    base model) to `params`; returns their names."""
    names = []
    for stem, chosen in lora.slices.items():
        n_in, dtype = params[f"{stem}.w"].shape[1], params[f"{stem}.w"].dtype
        for short, lo, hi, _ in chosen:
            bound = 1 / np.sqrt(n_in)
            params[f"{stem}.lora.{short}.A"] = rng.uniform(-bound, bound, (lora.rank, n_in)).astype(dtype)
            params[f"{stem}.lora.{short}.B"] = np.zeros((hi - lo, lora.rank), dtype)
            names += [f"{stem}.lora.{short}.A", f"{stem}.lora.{short}.B"]
    return names


def merged(params: dict, lora: Lora) -> dict:
    """Base parameters with each adapter folded in, W[lo:hi] += scale * B A, and the adapters dropped."""
    out = {name: value for name, value in params.items() if ".lora." not in name}
    for stem, chosen in lora.slices.items():
        w = out[f"{stem}.w"].copy()
        for short, lo, hi, _ in chosen:
            a, b = params[f"{stem}.lora.{short}.A"], params[f"{stem}.lora.{short}.B"]
            w[lo:hi] += w.dtype.type(lora.scale) * (b @ a)  # [out, rank] @ [rank, in]
        out[f"{stem}.w"] = w
    return out
