"""Weights stored once in llmx's cache as safetensors files ("packs") and memory-mapped after.

Two kinds of pack, written on the first load and memory-mapped by every later one:
- GPT-2's matrices repacked row-major. Hugging Face's GPT-2 checkpoints store each matrix as Conv1D's
  [in, out]. The engine can use them as transposed views of the memory map, with no copy, but decoding
  one token is a matrix-vector product per matrix, and OpenBLAS runs those about 30% faster on row-major
  [out, in] matrices (bench/bench.py measures it).
- A GGUF file's weights as the engine uses them: dequantized to float32, query/key rows un-permuted,
  q/k/v and gate/up fused (`gguf_packed`). Dequantizing takes seconds on every load (2 s for SmolLM2,
  8 s for Gemma 3 270M); mapping the pack takes milliseconds. The pack holds the final `Weights`, not
  the dequantized tensors, so a later load copies nothing (fusing would copy every matrix again).
Both live in `$LLMX_CACHE` (default `~/.cache/llmx`), named after the content of their sources (a
SHA-256 of their files). Set LLMX_PACK=0 to build the weights from the checkpoint on every load.

Soundness at little cost: a file's SHA-256 is remembered in `$LLMX_CACHE/digests/` under the file's
identity, (device, inode, size, mtime, ctime). The kernel sets ctime on every write and every metadata
change, and nothing short of changing the system clock sets it back (`touch -r`, a restored backup or
a sync tool can set the mtime, not the ctime), so while the identity is unchanged the bytes are too.
A file is therefore hashed once per change (0.31 s for 500 MB on the development machine) and each
later load costs a stat. The pack records the SHA-256 of its own data when it is written and is
checked against it the same way before use, so a pack whose data was overwritten is never used.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import json
import os
import re
import socket
import time
from importlib.metadata import version
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import CheckpointError
from .model import Block, Config, Linear, Norm, Weights
from .formats.safetensors import read_header, read_metadata, read_safetensors

MATRICES = ("w_qkv", "w_o", "w_in", "w_out")
LAYOUT = 2  # part of a pack's name: bumped when the names or layout of what a pack holds change
PACK_FORMAT = "llmx-gpt2-pack-2"  # in the pack's metadata; a pack of another format is not used
# Bumped whenever engine/arch/ builds other Weights from the same GGUF file (a fix to un-permuting, a new
# fused matrix): part of the pack's name and metadata. The gguf package's version (which dequantizes) is
# part of the name too.
GGUF_LAYOUT = 1
GGUF_FORMAT = f"llmx-gguf-pack-{GGUF_LAYOUT}"
ALIGNMENT = 64  # bytes: every tensor of a pack starts at a multiple of this (a cache line, AVX-512's width)
STALE_SECONDS = 3600  # a .partial file untouched this long belongs to no live writer (one writes continuously)


@dataclasses.dataclass(frozen=True)
class Purpose:
    """What a kind of pack is for, in the notices: while it is written, and what happens without it."""

    writing: str  # "packing the weights for fast decoding"
    without: str  # "using the weights as they are (slower decoding)"


GPT2_PURPOSE = Purpose("packing the weights for fast decoding",
                       "using the weights as they are (slower decoding)")
GGUF_PURPOSE = Purpose("storing the dequantized weights for a fast start",
                       "dequantizing them on every load (slower start)")


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmx"
    return Path(os.environ.get("LLMX_CACHE") or default)


def enabled() -> bool:
    return os.environ.get("LLMX_PACK", "1") != "0"


def packed(weights: Weights, sources: list[Path], notice: Callable[[str], None]) -> Weights:
    """`weights` with every block matrix replaced by its row-major copy from the cache (written if missing)."""
    if not enabled() or all(m.w.flags.c_contiguous for m in matrices(weights)):
        return weights
    path = cache_dir() / f"gpt2-v{LAYOUT}-{content_key(sources, PACK_FORMAT)}.safetensors"
    rows = through_pack(path, PACK_FORMAT, lambda: {name: m.w for name, m in named_matrices(weights)},
                        GPT2_PURPOSE, notice)
    return weights if rows is None else replace_matrices(weights, rows)


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
    return verified_pack(path, fmt)


def ensure_writable(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if not os.access(folder, os.W_OK):
        raise OSError(errno.EACCES, "the folder is not writable", str(folder))


def matrices(weights: Weights):
    return (m for _, m in named_matrices(weights))


def named_matrices(weights: Weights):
    for i, block in enumerate(weights.blocks):
        for name in MATRICES:
            yield f"h.{i}.{name}", getattr(block, name)


def replace_matrices(weights: Weights, rows: dict[str, np.ndarray]) -> Weights:
    def block(i: int, b: Block) -> Block:
        changes = {}
        for name in MATRICES:
            old, new = getattr(b, name), rows.get(f"h.{i}.{name}")
            if new is None or new.shape != old.w.shape:
                return b  # not this checkpoint's pack: keep the views
            changes[name] = dataclasses.replace(old, w=new)
        return dataclasses.replace(b, **changes)

    return dataclasses.replace(weights, blocks=tuple(block(i, b) for i, b in enumerate(weights.blocks)))


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
    return tensors


def unflatten(tensors: dict[str, np.ndarray]) -> Weights | None:
    """The Weights `flatten` took apart (a Linear is a group with "w", a Norm one with "g"); None if the
    names do not make Weights."""
    tree: dict = {}
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


def content_key(sources: list[Path], fmt: str) -> str:
    """Changes whenever the bytes of a source file change (and only then): a digest of their SHA-256s."""
    digest = hashlib.sha256(fmt.encode())
    for source in sources:
        digest.update(file_digest(source).encode())
    return digest.hexdigest()[:32]


def verified_pack(path: Path, fmt: str) -> dict[str, np.ndarray] | None:
    """The pack's tensors if its header is sound and its data has the SHA-256 recorded when it was written."""
    try:
        metadata = read_metadata(path)
        _, data_start = read_header(path)
        if metadata.get("format") != fmt or file_digest(path, data_start) != metadata.get("data_sha256"):
            return None
        return read_safetensors(path)
    except (CheckpointError, OSError):
        return None


def file_digest(path: Path, start: int = 0) -> str:
    """SHA-256 of the file's bytes from `start` on, remembered under the file's identity (see the top)."""
    stat = path.stat()
    identity = [str(path.resolve()), start, stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns,
                stat.st_ctime_ns]
    memo = digest_memo(path, start)
    try:
        saved = json.loads(memo.read_text())
        if saved["identity"] == identity:
            return saved["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none yet, or unreadable: hash the file
    with open(path, "rb") as f:
        f.seek(start)
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    remember_digest(path, start, identity, digest)
    return digest


def digest_memo(path: Path, start: int) -> Path:
    name = hashlib.sha256(f"{path.resolve()}\0{start}".encode()).hexdigest()[:32]
    return cache_dir() / "digests" / f"{name}.json"


def remember_digest(path: Path, start: int, identity: list, digest: str) -> None:
    """Write the memo atomically; in a read-only cache the file is simply hashed again next time."""
    memo = digest_memo(path, start)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        partial = memo.with_name(f"{memo.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps({"identity": identity, "sha256": digest}))
        os.replace(partial, memo)
    except OSError:
        pass


def write_pack(path: Path, fmt: str, tensors: dict[str, np.ndarray]) -> None:
    """The pack: a safetensors file whose metadata records the SHA-256 of its data, remembered at once."""
    tensors = aligned(tensors)
    data_sha256 = hashlib.sha256()
    for array in tensors.values():
        data_sha256.update(np.ascontiguousarray(array, dtype=np.float32).data)
    data_start = write_safetensors(path, tensors, {"format": fmt, "data_sha256": data_sha256.hexdigest()})
    stat = path.stat()
    remember_digest(path, data_start, [str(path.resolve()), data_start, stat.st_dev, stat.st_ino, stat.st_size,
                                       stat.st_mtime_ns, stat.st_ctime_ns], data_sha256.hexdigest())


def aligned(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`tensors` with a zero tensor "pad.N" after each whose float32 bytes are not a multiple of ALIGNMENT, so
    that every tensor starts aligned (safetensors has no gaps between tensors; readers ignore "pad.")."""
    result = {}
    for name, array in tensors.items():
        result[name] = array
        pad = -(array.size * 4) % ALIGNMENT  # bytes; a multiple of 4
        if pad:
            result[f"pad.{len(result)}"] = np.zeros(pad // 4, np.float32)
    return result


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> int:
    """A safetensors file of float32 tensors, written row-major one tensor at a time, then renamed into place.
    Returns the offset where the data starts."""
    header, offset = {"__metadata__": metadata}, 0
    for name, array in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + array.size * 4]}
        offset += array.size * 4
    text = json.dumps(header).encode()
    text += b" " * (-(8 + len(text)) % ALIGNMENT)  # so that the data starts aligned (and with aligned(), each tensor)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.{host_tag()}.partial")
    try:
        with open(partial, "wb") as f:
            f.write(len(text).to_bytes(8, "little") + text)
            for array in tensors.values():
                f.write(np.ascontiguousarray(array, dtype=np.float32).tobytes())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return 8 + len(text)


def host_tag() -> str:
    """This machine, in a .partial file's name: a writer's process id means something only on its own machine."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def remove_stale_partials(folder: Path) -> None:
    """Delete the .partial files of killed writers: this machine's whose process is gone, and any untouched
    for an hour (a live writer writes continuously; a cache may be shared by several machines)."""
    pattern = re.compile(r".*\.(\d+)\.([0-9a-f]{8})\.partial")
    for partial in folder.glob("*.safetensors.*.partial"):
        match = pattern.fullmatch(partial.name)
        try:
            mine = match is not None and match[2] == host_tag()
            if (mine and not process_exists(int(match[1]))) or time.time() - partial.stat().st_mtime > STALE_SECONDS:
                partial.unlink()
        except OSError:
            pass  # gone already, or a read-only cache


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process (or an id no process can have: then the age decides)
    return True
