"""Between the engine's frozen inference `Weights` and the flat dict of arrays that training updates."""

from __future__ import annotations

import numpy as np

from ..model import Block, Config, Linear, Norm, Weights

LINEARS = ("w_qkv", "w_o", "w_in", "w_out")


def to_params(weights: Weights, dtype=np.float32, *, copy: bool = True) -> dict[str, np.ndarray]:
    """Contiguous arrays of every weight, named `embed`, `blocks.0.w_qkv.w`, `ln_final.g`, ...: a tied unembedding
    appears once, as `embed`. copy=False shares the arrays already in `dtype` and row-major (for weights that stay
    frozen, as LoRA's base: half the memory); copy=True makes fresh ones that training may change in place."""
    params = {"embed": weights.embed}
    if weights.pos_embed is not None:
        params["pos_embed"] = weights.pos_embed
    for i, blk in enumerate(weights.blocks):
        for name in ("ln1", "ln2", *LINEARS):
            part = getattr(blk, name)
            for key, value in _fields(part):
                if value is not None:
                    params[f"blocks.{i}.{name}.{key}"] = value
    for key, value in _fields(weights.ln_final):
        if value is not None:
            params[f"ln_final.{key}"] = value
    if weights.unembed is not weights.embed:
        params["unembed"] = weights.unembed
    if copy:
        return {name: np.array(value, dtype=dtype, order="C") for name, value in params.items()}
    return {name: np.ascontiguousarray(value, dtype=dtype) for name, value in params.items()}


def _fields(part) -> list:
    if isinstance(part, Linear):
        return [("w", part.w), ("b", part.b)]
    return [("g", part.g), ("b", part.b)]


def to_weights(params: dict[str, np.ndarray], cfg: Config) -> Weights:
    """Inference weights from training parameters (sharing their arrays; LoRA adapters are not included)."""
    def block(i: int) -> Block:
        p = f"blocks.{i}."
        lin = {n: Linear(params[f"{p}{n}.w"], params.get(f"{p}{n}.b")) for n in LINEARS}
        return Block(ln1=Norm(params[p + "ln1.g"], params.get(p + "ln1.b")), ln2=Norm(params[p + "ln2.g"],
                     params.get(p + "ln2.b")), **lin)

    return Weights(embed=params["embed"], pos_embed=params.get("pos_embed"),
                   blocks=tuple(block(i) for i in range(cfg.n_layer)),
                   ln_final=Norm(params["ln_final.g"], params.get("ln_final.b")),
                   unembed=params.get("unembed", params["embed"]))
