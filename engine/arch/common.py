"""What every architecture module shares: named tensors taken by shape, and checks of a configuration."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import CheckpointError
from ..formats.checks import MAX_CONTEXT, MAX_COUNT, count, short
from ..formats.gguf import GGUFHeader, gguf_vocab_size
from ..model import Config


@dataclass(frozen=True)
class TensorSource:
    """Named float32 tensors plus where they came from and what they should be, for error messages."""

    tensors: dict[str, np.ndarray]
    origin: str  # "model.safetensors in /path", "tiny.gguf"
    title: str  # the architecture, for people: "GPT-2", "Llama"

    def take(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """The tensor `name`, which must have `shape`: a wrong file fails here, naming the tensor."""
        if name not in self.tensors:
            raise CheckpointError(f"{self.origin} has no tensor '{name}': is this a {self.title} checkpoint?")
        array = self.tensors[name]
        if array.shape != shape:
            raise CheckpointError(f"tensor '{name}' in {self.origin} has shape {list(array.shape)}, "
                                  f"but the configuration implies {list(shape)}: the config and weights disagree")
        return array


def check_config(cfg: Config, keys: dict, where: str) -> None:
    """Head counts that divide: the reshape to [n_head, n_seq, d_head] and grouped-query attention need it.

    keys: Config field -> the name of that value in the file, for the message."""
    def fail(big: str, small: str):
        raise CheckpointError(f"{where}: {keys[big]} ({getattr(cfg, big)}) is not a multiple of {keys[small]} "
                              f"({getattr(cfg, small)}): the file is damaged; download or convert it again")

    if cfg.n_embd % cfg.n_head:
        fail("n_embd", "n_head")
    if cfg.n_head % cfg.n_kv_head:
        fail("n_head", "n_kv_head")
    if cfg.positions == "rotary" and cfg.d_head % 2:
        raise CheckpointError(f"{where}: the head size {keys['n_embd']} / {keys['n_head']} = {cfg.d_head} is odd, "
                              "but rotary positions need an even one: the file is damaged")


def check_block_count(names, pattern: str, n_layer: int, key: str, where: str) -> None:
    """The tensors' block numbers (`pattern` captures one from a name) are exactly 0 .. n_layer-1.

    Checked before any loop over n_layer, so a damaged count fails at once rather than loop for ever."""
    blocks = {int(m[1]) for m in map(re.compile(pattern).match, names) if m}
    if len(blocks) != n_layer or (blocks and (min(blocks), max(blocks)) != (0, n_layer - 1)):  # distinct numbers
        found = f"blocks {min(blocks)}..{max(blocks)} ({len(blocks)} in all)" if blocks else "no blocks"
        raise CheckpointError(f"{where}: {key} is {n_layer}, but the file has tensors for {found}: "
                              "the configuration and weights disagree; download or convert it again")


def flag(values: dict, key: str, where: str, *, default: bool) -> bool:
    """values[key] as true or false; `default` when the key is missing or null."""
    value = values.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise CheckpointError(f"{where}: {key} is {short(value)}, but must be true or false: "
                              "the file is damaged; download or convert it again")
    return value


# Config field -> the GGUF metadata key it comes from ({arch} is general.architecture).
GGUF_KEYS = dict(n_vocab="token_embd.weight rows", n_ctx="{arch}.context_length", n_embd="{arch}.embedding_length",
                 n_layer="{arch}.block_count", n_head="{arch}.attention.head_count",
                 n_kv_head="{arch}.attention.head_count_kv", n_ff="{arch}.feed_forward_length")


def gguf_keys(header: GGUFHeader) -> dict:
    """GGUF_KEYS for this file's architecture."""
    arch = header.meta.get("general.architecture")
    return {field: key.format(arch=arch) for field, key in GGUF_KEYS.items()}


def gguf_sizes(header: GGUFHeader, where: str) -> dict:
    """The Config fields every GGUF architecture stores alike: vocabulary, context, widths, counts, and
    whether the unembedding is the token embedding (no separate `output.weight`, as llama.cpp decides)."""
    keys = gguf_keys(header)
    values = {**header.meta, keys["n_vocab"]: gguf_vocab_size(header)}
    n_head = count(values, keys["n_head"], where)
    sizes = {field: count(values, keys[field], where, limit=MAX_CONTEXT if field == "n_ctx" else MAX_COUNT)
             for field in ("n_vocab", "n_ctx", "n_embd", "n_layer", "n_ff")}
    return dict(sizes, n_head=n_head, d_head=sizes["n_embd"] // n_head,
                tied=all(t.name != "output.weight" for t in header.tensors))
