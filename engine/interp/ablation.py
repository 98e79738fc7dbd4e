"""Ablation: knock out attention heads or MLPs and see what the model does without them.

A head is ablated at its output before w_o (`blocks.L.attn.z`, its slice of the values it read), so zeroing it is
exactly the model with that head's columns of w_o set to zero; an MLP at `blocks.L.mlp_out`. `zero` replaces the
output with zeros; `mean` with its mean over the prompt's positions (the same vector at every position, also
for tokens generated later), which keeps the average the next layers are used to and removes what depends on
the input.

    model = ablated(lm, parse_ablation("9.6,9.9,10.mlp"), "mean", ids)   # then predict, score or generate with it
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..hooks import Hooks, Trace
from ..lm import LanguageModel
from .common import check_head, check_layer

MODES = ("zero", "mean")


@dataclass(frozen=True)
class Unit:
    layer: int
    head: int | None  # None: the block's MLP

    @property
    def site(self) -> str:
        return f"blocks.{self.layer}.attn.z" if self.head is not None else f"blocks.{self.layer}.mlp_out"

    def __str__(self) -> str:
        return f"{self.layer}.{'mlp' if self.head is None else self.head}"


def parse_ablation(spec: str) -> tuple[Unit, ...]:
    """'9.6,9.9,10.mlp' -> heads 6 and 9 of block 9 and block 10's MLP."""
    units = []
    for part in (p.strip() for p in spec.split(",")):
        match = re.fullmatch(r"(\d+)\.(\d+|mlp)", part)
        if not match:
            raise InputError(f"{part!r} is not a head or an MLP: write LAYER.HEAD (9.6) or LAYER.mlp (9.mlp), "
                             "several separated by commas")
        units.append(Unit(int(match[1]), None if match[2] == "mlp" else int(match[2])))
    return tuple(dict.fromkeys(units))


def check_units(lm: LanguageModel, units) -> None:
    for unit in units:
        check_layer(lm, unit.layer)
        if unit.head is not None:
            check_head(lm, unit.head)


def replacement(unit: Unit, value: np.ndarray | None):
    """A hook putting `value` (None: zeros) in place of the unit's output at every position."""

    def replace(activation: np.ndarray, site) -> np.ndarray:
        activation = activation.copy()
        if unit.head is None:
            activation[:] = 0 if value is None else value
        else:
            activation[:, unit.head] = 0 if value is None else value
        return activation

    return replace


def means(lm: LanguageModel, units, ids: list[int]) -> list[np.ndarray]:
    """Each unit's output averaged over the prompt's positions: [d_head] for a head, [n_embd] for an MLP."""
    trace = Trace(tuple(dict.fromkeys(unit.site for unit in units)))
    lm.forward(lm.fit(ids), hooks=trace)
    return [trace[u.site].mean(axis=0) if u.head is None else trace[u.site][:, u.head].mean(axis=0) for u in units]


def ablation_hooks(lm: LanguageModel, units, mode: str = "zero", ids: list[int] | None = None) -> Hooks:
    """Hooks ablating `units`; mode "mean" needs the prompt `ids` to average over."""
    check_units(lm, units)
    if mode not in MODES:
        raise InputError(f"ablation mode {mode!r} is not one of {', '.join(MODES)}")
    if mode == "mean" and not ids:
        raise InputError("mean ablation averages over a prompt: give one")
    values = means(lm, units, ids) if mode == "mean" else [None] * len(units)
    return Hooks([(u.site, replacement(u, v)) for u, v in zip(units, values)])


@dataclass(frozen=True)
class HookedModel(LanguageModel):
    """A model whose every forward pass runs `hooks` first (then any the caller gives): predict, score and
    generate all go through it."""

    hooks: Hooks = field(default_factory=Hooks, repr=False)

    def forward_chunks(self, ids, cache=None, *, hooks: Hooks | None = None, **options):
        both = self.hooks if hooks is None else self.hooks + hooks
        return super().forward_chunks(ids, cache, hooks=both, **options)


def with_hooks(lm: LanguageModel, hooks: Hooks) -> HookedModel:
    fields = {f.name: getattr(lm, f.name) for f in dataclasses.fields(lm)}
    return HookedModel(**{**fields, "hooks": fields.get("hooks", Hooks()) + hooks})


def ablated(lm: LanguageModel, units, mode: str = "zero", ids: list[int] | None = None) -> LanguageModel:
    """`lm` with `units` ablated on every pass (`lm` itself when there are none)."""
    if not units:
        return lm
    return with_hooks(lm, ablation_hooks(lm, units, mode, ids))
