"""SentencePiece tokenizers stored once in llmx's cache, so that a later load skips building them.

Building Gemma 3's tokenizer ranks 262,144 pieces (spm.py: ~0.7 s) after reading them from the GGUF header,
or parses a 33 MB tokenizer.json (seconds). What that produces is a few arrays: each rank's bytes, the token
of each rank, each token's bytes, the byte tokens, the whole and control tokens, the pre-split pattern. They
are stored as an .npz (plain arrays, never pickle) in `$LLMX_CACHE`, named after the SHA-256 of the files
they came from (formats/pack.py's `content_key`, so a changed file gets a new entry), with the SHA-256 of
their own bytes inside, checked before use: a damaged entry is built and written again. LLMX_PACK=0 (no
cache) builds the tokenizer on every load.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from .formats.pack import cache_dir, content_key, host_tag, remove_stale_partials
from .packed import enabled
from .spm import SentencePieceTokenizer

FORMAT = "llmx-spm-2"  # part of the key: bumped when spm.py builds other ranks from the same files


def cached_sentencepiece(sources: list[Path], n_vocab: int, where: str,
                         build: Callable[[], SentencePieceTokenizer]) -> SentencePieceTokenizer:
    """The tokenizer built from `sources` by `build()`, from llmx's cache when it holds a sound copy."""
    if not enabled():
        return build()
    path = cache_dir() / f"spm-{content_key(sources, f'{FORMAT} {n_vocab}')}.npz"
    found = read(path, where)
    if found is not None:
        return found
    tokenizer = build()
    try:
        remove_stale_partials(path.parent)
        write(path, tokenizer)
    except OSError:
        pass  # a read-only or full cache: built again next time
    return tokenizer


def arrays_of(tok: SentencePieceTokenizer) -> dict[str, np.ndarray]:
    return dict(**packed_bytes("rank", tok.rank_pieces), rank_ids=tok.rank_ids, **packed_bytes("piece", tok.pieces),
                byte_ids=tok.byte_ids, whole=np.array(sorted(tok.whole.values()), np.int64),
                control=np.array(sorted(tok.control.values()), np.int64),
                eos=np.array(sorted(tok.eos_ids), np.int64), pattern=np.frombuffer(tok.pattern.encode(), np.uint8),
                settings=np.array([tok.n_vocab, -1 if tok.bos_id is None else tok.bos_id, tok.add_bos], np.int64))


def packed_bytes(name: str, items) -> dict[str, np.ndarray]:
    """Byte strings as one array of their bytes and one of offsets: item i is bytes[offsets[i]:offsets[i+1]]."""
    offsets = np.cumsum([0, *map(len, items)], dtype=np.int64)
    return {f"{name}_bytes": np.frombuffer(b"".join(items), np.uint8), f"{name}_offsets": offsets}


def unpacked_bytes(arrays: dict, name: str) -> list[bytes]:
    blob, offsets = arrays[f"{name}_bytes"].tobytes(), arrays[f"{name}_offsets"].tolist()
    return [blob[a:b] for a, b in zip(offsets, offsets[1:])]


def digest(arrays: dict[str, np.ndarray]) -> np.ndarray:
    sha = hashlib.sha256()
    for name in sorted(arrays):
        sha.update(name.encode() + str(arrays[name].dtype).encode() + np.ascontiguousarray(arrays[name]).data)
    return np.frombuffer(sha.digest(), np.uint8)


def write(path: Path, tok: SentencePieceTokenizer) -> None:
    arrays = arrays_of(tok)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.{host_tag()}.partial")
    try:
        with open(partial, "wb") as f:
            np.savez(f, sha256=digest(arrays), **arrays)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def read(path: Path, where: str) -> SentencePieceTokenizer | None:
    """The tokenizer stored at `path`, or None if there is none or it is not sound."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        stored = arrays.pop("sha256")
        if not np.array_equal(stored, digest(arrays)):
            return None
        ranks = tuple(unpacked_bytes(arrays, "rank"))
        pieces = tuple(unpacked_bytes(arrays, "piece"))
        n_vocab, bos, add_bos = arrays["settings"].tolist()
        pattern = arrays["pattern"].tobytes().decode()
        return SentencePieceTokenizer(
            dict(zip(ranks, range(len(ranks)))), ranks, arrays["rank_ids"], pieces,
            arrays["byte_ids"], whole={pieces[i].decode(): i for i in arrays["whole"].tolist()},
            control={pieces[i].decode(): i for i in arrays["control"].tolist()}, n_vocab=n_vocab,
            bos_id=None if bos < 0 else bos, eos_ids=frozenset(arrays["eos"].tolist()), add_bos=bool(add_bos),
            pattern=pattern, name=f"spm:{where}")
    except (OSError, KeyError, ValueError, UnicodeDecodeError, zipfile.BadZipFile):
        return None
