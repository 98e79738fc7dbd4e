"""Between the engine's frozen inference `Weights` and the flat dict of arrays that training updates."""

from __future__ import annotations

import numpy as np

from ..model import Block, Config, Linear, Norm, Weights

LINEARS = ("w_qkv", "w_o", "w_in", "w_out")
NORMS = ("ln1", "ln2", "ln1_post", "ln2_post", "q_norm", "k_norm")  # the last four: Gemma's, None elsewhere


def to_params(weights: Weights, dtype=np.float32, *, copy: bool = True) -> dict[str, np.ndarray]:
    """Contiguous arrays of every weight, named `embed`, `blocks.0.w_qkv.w`, `blocks.0.q_norm.g`, `ln_final.g`, ...:
    a tied unembedding appears once, as `embed`. copy=False shares the arrays already in `dtype` and row-major (for
    weights that stay frozen, as LoRA's base: half the memory); copy=True makes fresh ones that training may change
    in place. The embedding keeps its layout either way: Gemma's is column-major (packed.column_major), and a
    row-major copy of it would be a second 671 MB array for Gemma 3 270M, of no use to the head's products."""
    params = {"embed": weights.embed}
    if weights.pos_embed is not None:
        params["pos_embed"] = weights.pos_embed
    for i, blk in enumerate(weights.blocks):
        for name in (*NORMS, *LINEARS):
            part = getattr(blk, name)
            for key, value in _fields(part) if part is not None else ():
                if value is not None:
                    params[f"blocks.{i}.{name}.{key}"] = value
    for key, value in _fields(weights.ln_final):
        if value is not None:
            params[f"ln_final.{key}"] = value
    if weights.unembed is not weights.embed:
        params["unembed"] = weights.unembed
    return {name: _array(value, dtype, copy, "K" if name == "embed" else "C") for name, value in params.items()}


def _array(value: np.ndarray, dtype, copy: bool, order: str) -> np.ndarray:
    """`value` in `dtype`, C-contiguous (order "C") or C- or F-contiguous as it is (order "K"): a copy with copy,
    else the array itself where it already is so."""
    if copy:
        return np.array(value, dtype=dtype, order=order)
    kept = order == "K" and value.dtype == dtype and value.flags.f_contiguous
    return value if kept else np.ascontiguousarray(value, dtype=dtype)


def _fields(part) -> list:
    if isinstance(part, Linear):
        return [("w", part.w), ("b", part.b)]
    return [("g", part.g), ("b", part.b)]


def to_weights(params: dict[str, np.ndarray], cfg: Config) -> Weights:
    """Inference weights from training parameters (sharing their arrays; LoRA adapters are not included)."""
    def block(i: int) -> Block:
        p = f"blocks.{i}."
        lin = {n: Linear(params[f"{p}{n}.w"], params.get(f"{p}{n}.b")) for n in LINEARS}
        norms = {n: Norm(params[f"{p}{n}.g"], params.get(f"{p}{n}.b")) for n in NORMS if f"{p}{n}.g" in params}
        return Block(**norms, **lin)

    return Weights(embed=params["embed"], pos_embed=params.get("pos_embed"),
                   blocks=tuple(block(i) for i in range(cfg.n_layer)),
                   ln_final=Norm(params["ln_final.g"], params.get("ln_final.b")),
                   unembed=params.get("unembed", params["embed"]))
