"""Weights stored once in llmx's cache as safetensors files ("packs") and memory-mapped after.

Two kinds of pack, written on the first load and memory-mapped by every later one:
- GPT-2's matrices repacked row-major. Hugging Face's GPT-2 checkpoints store each matrix as Conv1D's
  [in, out]. The engine can use them as transposed views of the memory map, with no copy, but decoding
  one token is a matrix-vector product per matrix, which OpenBLAS ran about 30% faster on row-major
  [out, in] matrices where this was first measured (on a 2026-11 AVX-512 host, a whole decoded token was
  3% faster with the pack under OpenBLAS's Haswell kernels and 4% slower under its SkylakeX ones). The
  tied embedding goes into the pack column-major (`column_major`).
- A GGUF file's weights as the engine uses them: dequantized to float32, query/key rows un-permuted,
  q/k/v and gate/up fused (`gguf_packed`). Dequantizing takes seconds on every load (2 s for SmolLM2,
  8 s for Gemma 3 270M); mapping the pack takes milliseconds. The pack holds the final `Weights`, not
  the dequantized tensors, so a later load copies nothing (fusing would copy every matrix again).
Both live in `$LLMX_CACHE` (default `~/.cache/llmx`), named after the content of their sources (a
SHA-256 of their files). Set LLMX_PACK=0 to build the weights from the checkpoint on every load.

Each pack is content-keyed and checked before use: see `formats/pack.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from importlib.metadata import version
from pathlib import Path
from typing import Callable

import numpy as np

from .formats.pack import cache_dir, content_key, ensure_writable, remove_stale_partials, verified_pack, write_pack
from .model import Block, Config, Linear, Norm, Weights

MATRICES = ("w_qkv", "w_o", "w_in", "w_out")
LAYOUT = 3  # part of a pack's name: bumped when the names or layout of what a pack holds change (3: "embed.T")
PACK_FORMAT = f"llmx-gpt2-pack-{LAYOUT}"  # in the pack's metadata; a pack of another format is not used
# Bumped whenever engine/arch/ builds other Weights from the same GGUF file (a fix to un-permuting, a new
# fused matrix): part of the pack's name and metadata. The gguf package's version (which dequantizes) is
# part of the name too.
GGUF_LAYOUT = 3  # 2: column-major matrices stored as their transposes (NAME.T); 3: every tied embedding column-major
GGUF_FORMAT = f"llmx-gguf-pack-{GGUF_LAYOUT}"


@dataclasses.dataclass(frozen=True)
class Purpose:
    """What a kind of pack is for, in the notices: while it is written, and what happens without it."""

    writing: str  # "packing the weights for fast decoding"
    without: str  # "using the weights as they are (slower decoding)"


GPT2_PURPOSE = Purpose("packing the weights for fast decoding",
                       "using the weights as they are (slower decoding)")
GGUF_PURPOSE = Purpose("storing the dequantized weights for a fast start",
                       "dequantizing them on every load (slower start)")


def enabled() -> bool:
    return os.environ.get("LLMX_PACK", "1") != "0"


def packed(weights: Weights, sources: list[Path], notice: Callable[[str], None]) -> Weights:
    """`weights` with every block matrix replaced by its row-major copy from the cache (written if missing), and a
    tied embedding by its column-major one."""
    if not enabled() or all(m.w.flags.c_contiguous for m in matrices(weights)):
        return weights
    path = cache_dir() / f"gpt2-v{LAYOUT}-{content_key(sources, PACK_FORMAT)}.safetensors"

    def tensors() -> dict[str, np.ndarray]:
        embed = {"embed.T": weights.embed.T} if weights.unembed is weights.embed else {}
        return {**{name: m.w for name, m in named_matrices(weights)}, **embed}

    rows = through_pack(path, PACK_FORMAT, tensors, GPT2_PURPOSE, notice)
    return weights if rows is None else replace_matrices(weights, rows)


def column_major(weights: Weights) -> Weights:
    """The tied embedding [n_vocab, n_embd] held column-major, i.e. as its transpose [n_embd, n_vocab] in row-major
    order. The logits x @ unembed.T then read that transpose row by row, each row a multiple of one input, which
    OpenBLAS streams faster than one dot product per row: a whole decoded token took 5% less time on GPT-2 small
    (19.7 -> 18.8 ms) and SmolLM2-135M (25.4 -> 24.3 ms), 4-5% with OpenBLAS's Haswell kernels too; for Gemma 3
    270M, whose unembedding is 63% of the bytes a token reads, the product alone ran ~1.7x faster. Prefill does
    not change: looking a token up reads a column."""
    if weights.unembed is not weights.embed:
        return weights
    embed = np.asfortranarray(weights.embed)  # [n_vocab, n_embd], column-major
    return dataclasses.replace(weights, embed=embed, unembed=embed)


def gguf_packed(source: Path, cfg: Config, build: Callable[[], Weights], notice: Callable[[str], None]) -> Weights:
    """The weights of the GGUF file `source` memory-mapped from their pack; `build()` (which dequantizes)
    runs only when there is no sound pack yet, to write one, or when none can be written or used."""
    if not enabled():
        return build()
    build = functools.cache(build)
    key = content_key([source], f"{GGUF_FORMAT} gguf {version('gguf')}")
    path = cache_dir() / f"gguf-v{GGUF_LAYOUT}-{key}.safetensors"
    tensors = through_pack(path, GGUF_FORMAT, lambda: flatten(build()), GGUF_PURPOSE, notice)
    weights = None if tensors is None else unflatten(tensors)
    return weights if weights is not None and fits(weights, cfg) else build()


def through_pack(path: Path, fmt: str, tensors: Callable[[], dict[str, np.ndarray]], purpose: Purpose,
                 notice: Callable[[str], None]) -> dict[str, np.ndarray] | None:
    """The tensors of the pack at `path`, memory-mapped: used if it is sound, else written from `tensors()`
    first. None, after one notice, where it can be neither used nor written."""
    remove_stale_partials(path.parent)
    if path.is_file():
        found = verified_pack(path, fmt)
        if found is not None:
            return found
        try:
            path.unlink()  # damaged: written again below
        except OSError as e:
            notice(f"the packed weights {path} are damaged and cannot be removed ({e.strerror}): "
                   f"{purpose.without}; delete that file")
            return None
    arrays = tensors()
    try:
        ensure_writable(path.parent)  # so that a read-only cache gets one notice, not two
        notice(f"{purpose.writing}, once: {sum(a.size * 4 for a in arrays.values()) / 1e6:.0f} MB into {path.parent}")
        write_pack(path, fmt, arrays)
    except OSError as e:
        notice(f"cannot write {path} ({e.strerror}): {purpose.without}")
        return None
    remove_superseded(path)
    return verified_pack(path, fmt)


def remove_superseded(pack: Path) -> None:
    """Delete the packs of the same kind as `pack` ("gpt2-v3-KEY.safetensors") but an older layout: this llmx never
    reads them, and each is as large as a model's float32 weights (GPT-2's first packs had no "-vN": layout 1).
    An older llmx sharing the cache writes its own again when it next loads that model."""
    kind, layout = re.fullmatch(r"(\w+)-v(\d+)-[0-9a-f]+\.safetensors", pack.name).groups()
    older = re.compile(rf"{kind}-(?:v(\d+)-)?[0-9a-f]{{16,}}\.safetensors")  # a content key: 16 hex digits or more
    for path in pack.parent.glob(f"{kind}-*.safetensors"):
        match = older.fullmatch(path.name)
        if match and int(match[1] or 1) < int(layout):
            try:
                path.unlink()
            except OSError:
                pass  # gone already, or a read-only file


def matrices(weights: Weights):
    return (m for _, m in named_matrices(weights))


def named_matrices(weights: Weights):
    for i, block in enumerate(weights.blocks):
        for name in MATRICES:
            yield f"h.{i}.{name}", getattr(block, name)


def replace_matrices(weights: Weights, rows: dict[str, np.ndarray]) -> Weights:
    """The block matrices from the pack's `rows`, and the tied embedding from its transpose "embed.T"; weights of
    another checkpoint (shapes that differ) are kept as they are."""
    def block(i: int, b: Block) -> Block:
        changes = {}
        for name in MATRICES:
            old, new = getattr(b, name), rows.get(f"h.{i}.{name}")
            if new is None or new.shape != old.w.shape:
                return b  # not this checkpoint's pack: keep the views
            changes[name] = dataclasses.replace(old, w=new)
        return dataclasses.replace(b, **changes)

    weights = dataclasses.replace(weights, blocks=tuple(block(i, b) for i, b in enumerate(weights.blocks)))
    embed = rows["embed.T"].T if "embed.T" in rows else None  # one view, for both: a tied unembedding *is* embed
    if weights.unembed is weights.embed and embed is not None and embed.shape == weights.embed.shape:
        weights = dataclasses.replace(weights, embed=embed, unembed=embed)
    return weights


def flatten(weights: Weights) -> dict[str, np.ndarray]:
    """Every array of `weights` by its path: "embed", "blocks.3.w_qkv.w", "ln_final.g". Fields that are
    None are left out, and so is `unembed` when it is the token embedding (tied)."""
    def walk(prefix: str, value):
        if isinstance(value, np.ndarray):
            yield prefix, value
        elif isinstance(value, tuple):
            for i, item in enumerate(value):
                yield from walk(f"{prefix}.{i}", item)
        elif dataclasses.is_dataclass(value):
            for field in dataclasses.fields(value):
                yield from walk(f"{prefix}.{field.name}".lstrip("."), getattr(value, field.name))

    tensors = dict(walk("", weights))
    if weights.unembed is weights.embed:
        del tensors["unembed"]
    # A matrix kept column-major (a tied embedding, see column_major) is stored as its transpose, "NAME.T".
    return {f"{name}.T" if is_column_major(a) else name: a.T if is_column_major(a) else a for name, a in tensors.items()}


def is_column_major(array: np.ndarray) -> bool:
    return array.ndim == 2 and array.flags.f_contiguous and not array.flags.c_contiguous


def unflatten(tensors: dict[str, np.ndarray]) -> Weights | None:
    """The Weights `flatten` took apart (a Linear is a group with "w", a Norm one with "g"); None if the
    names do not make Weights."""
    tree: dict = {}
    tensors = {name.removesuffix(".T"): a.T if name.endswith(".T") else a for name, a in tensors.items()}
    for name, array in tensors.items():
        *groups, leaf = name.split(".")
        node = tree
        for group in groups:
            node = node.setdefault(group, {})
        node[leaf] = array
    tree.pop("pad", None)  # alignment padding (write_pack)

    def part(value):
        return value if isinstance(value, np.ndarray) else Linear(**value) if "w" in value else Norm(**value)

    try:
        blocks = tree.pop("blocks")
        blocks = tuple(Block(**{k: part(v) for k, v in blocks[str(i)].items()}) for i in range(len(blocks)))
        embed = tree.pop("embed")
        return Weights(embed=embed, blocks=blocks, unembed=tree.pop("unembed", embed), pos_embed=tree.pop(
            "pos_embed", None), **{k: part(v) for k, v in tree.items()})
    except (KeyError, TypeError, AttributeError):
        return None


def fits(weights: Weights, cfg: Config) -> bool:
    """The pack's weights have the sizes `cfg` (read from the file just now) gives them."""
    qkv = ((cfg.n_head + 2 * cfg.n_kv_head) * cfg.d_head, cfg.n_embd)
    return (len(weights.blocks) == cfg.n_layer and weights.embed.shape == (cfg.n_vocab, cfg.n_embd)
            and all(b.w_qkv.w.shape == qkv for b in weights.blocks))


