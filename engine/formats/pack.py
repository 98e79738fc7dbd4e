"""Packs: safetensors files of float32 tensors in llmx's cache, named after the content of their sources
and checked before use; no knowledge of what the tensors are (`packed.py` decides that).

Soundness at little cost: a file's SHA-256 is remembered in `$LLMX_CACHE/digests/` under the file's
identity, (device, inode, size, mtime, ctime). The kernel sets ctime on every write and every metadata
change, and nothing short of changing the system clock sets it back (`touch -r`, a restored backup or
a sync tool can set the mtime, not the ctime), so while the identity is unchanged the bytes are too.
A file is therefore hashed once per change (0.31 s for 500 MB on the development machine) and each
later load costs a stat. The pack records the SHA-256 of its own data when it is written and is
checked against it the same way before use, so a pack whose data was overwritten is never used.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import socket
import time
from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from .safetensors import read_header, read_metadata, read_safetensors

ALIGNMENT = 64  # bytes: every tensor of a pack starts at a multiple of this (a cache line, AVX-512's width)
STALE_SECONDS = 3600  # a .partial file untouched this long belongs to no live writer (one writes continuously)


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmx"
    return Path(os.environ.get("LLMX_CACHE") or default)


def ensure_writable(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if not os.access(folder, os.W_OK):
        raise OSError(errno.EACCES, "the folder is not writable", str(folder))


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
    for partial in folder.glob("*.*.partial"):  # packs (.safetensors) and tokenizers (.npz) alike
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
