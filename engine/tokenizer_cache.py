"""Tokenizers stored once in llmx's cache, so that a later load skips building them.

Building Gemma 3's SentencePiece tokenizer ranks 262,144 pieces (spm.py: ~0.7 s) after reading them from the
GGUF header, or parses a 33 MB tokenizer.json (seconds); a GGUF file's byte-level BPE (SmolLM2's 49,152 tokens)
takes a second read of the header with its arrays and the ranks from its vocabulary (~80 ms of a ~0.5 s
`continue --max-tokens 1`), GPT-2's vocab.json and merges.txt ~80 ms. What they produce is a few arrays: pieces' bytes and ranks, token ids, special
tokens, the pre-split pattern, settings. They are stored as an .npz (plain arrays, never pickle) in
`$LLMX_CACHE`, named after the SHA-256 of the files they came from (formats/pack.py's `content_key`, so a changed
file gets a new entry), with the SHA-256 of their own bytes inside, checked before use: a damaged entry is built
and written again. LLMX_PACK=0 (no cache) builds the tokenizer on every load.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from .formats.pack import cache_dir, content_key, host_tag, remove_stale_partials
from .packed import enabled
from .spm import SentencePieceTokenizer
from .tokenizer import BPE, Tokenizer

SPM_FORMAT = "llmx-spm-2"  # part of the key: bumped when spm.py builds other ranks from the same files
BPE_FORMAT = "llmx-bpe-1"  # and when tokenizer.py or hf_tokenizer.py build another BPE
Built = TypeVar("Built")


def cached_sentencepiece(sources: list[Path], n_vocab: int, where: str,
                         build: Callable[[], SentencePieceTokenizer]) -> SentencePieceTokenizer:
    """The tokenizer built from `sources` by `build()`, from llmx's cache when it holds a sound copy."""
    return cached(f"spm-{key(sources, f'{SPM_FORMAT} {n_vocab}')}", build, spm_arrays,
                  lambda arrays: spm_of(arrays, where))


def cached_bpe(sources: list[Path], n_vocab: int, where: str, build: Callable[[], BPE]) -> Tokenizer:
    """The byte-level BPE built from `sources` by `build()`, from llmx's cache when it holds a sound copy."""
    return cached(f"bpe-{key(sources, f'{BPE_FORMAT} {n_vocab}')}", build, bpe_arrays,
                  lambda arrays: bpe_of(arrays, where)).tokenizer()


def key(sources: list[Path], kind: str) -> str:
    """The cache key of a tokenizer built from those of `sources` that exist (a folder's tokenizer_config.json
    or config.json may be missing; adding one later makes another key)."""
    return content_key([path for path in sources if path.is_file()], kind)


def cached(name: str, build: Callable[[], Built], arrays_of: Callable[[Built], dict[str, np.ndarray]],
           made_of: Callable[[dict[str, np.ndarray]], Built]) -> Built:
    """What `build()` makes, read from the cache's `name`.npz if it is there and sound, else built and stored."""
    if not enabled():
        return build()
    path = cache_dir() / f"{name}.npz"
    found = read(path, made_of)
    if found is not None:
        return found
    made = build()
    try:
        remove_stale_partials(path.parent)
        write(path, arrays_of(made))
    except OSError:
        pass  # a read-only or full cache: built again next time
    return made


def spm_arrays(tok: SentencePieceTokenizer) -> dict[str, np.ndarray]:
    return dict(**packed_bytes("rank", tok.rank_pieces), rank_ids=tok.rank_ids, **packed_bytes("piece", tok.pieces),
                byte_ids=tok.byte_ids, whole=np.array(sorted(tok.whole.values()), np.int64),
                control=np.array(sorted(tok.control.values()), np.int64),
                eos=np.array(sorted(tok.eos_ids), np.int64), pattern=np.frombuffer(tok.pattern.encode(), np.uint8),
                settings=np.array([tok.n_vocab, -1 if tok.bos_id is None else tok.bos_id, tok.add_bos], np.int64))


def spm_of(arrays: dict[str, np.ndarray], where: str) -> SentencePieceTokenizer:
    ranks = tuple(unpacked_bytes(arrays, "rank"))
    pieces = tuple(unpacked_bytes(arrays, "piece"))
    n_vocab, bos, add_bos = arrays["settings"].tolist()
    return SentencePieceTokenizer(
        dict(zip(ranks, range(len(ranks)))), ranks, arrays["rank_ids"], pieces,
        arrays["byte_ids"], whole={pieces[i].decode(): i for i in arrays["whole"].tolist()},
        control={pieces[i].decode(): i for i in arrays["control"].tolist()}, n_vocab=n_vocab,
        bos_id=None if bos < 0 else bos, eos_ids=frozenset(arrays["eos"].tolist()), add_bos=bool(add_bos),
        pattern=arrays["pattern"].tobytes().decode(), name=f"spm:{where}")


def bpe_arrays(spec: BPE) -> dict[str, np.ndarray]:
    special, pattern = sorted(spec.special.items()), np.frombuffer(spec.pattern.encode(), np.uint8)
    return dict(**packed_bytes("rank", list(spec.ranks)), rank_ids=np.array(list(spec.ranks.values()), np.int64),
                **packed_bytes("special", [text.encode() for text, _ in special]),
                special_ids=np.array([i for _, i in special], np.int64), pattern=pattern,
                eos=np.array(sorted(spec.eos), np.int64), dropped=np.array(sorted(spec.dropped), np.int64),
                settings=np.array([spec.n_vocab, -1 if spec.bos is None else spec.bos, spec.add_bos], np.int64),
                normalization=np.frombuffer((spec.normalization or "").encode(), np.uint8))


def bpe_of(arrays: dict[str, np.ndarray], where: str) -> BPE:
    n_vocab, bos, add_bos = arrays["settings"].tolist()
    special = [piece.decode() for piece in unpacked_bytes(arrays, "special")]
    return BPE(dict(zip(unpacked_bytes(arrays, "rank"), arrays["rank_ids"].tolist())),
               dict(zip(special, arrays["special_ids"].tolist())), arrays["pattern"].tobytes().decode(), n_vocab,
               None if bos < 0 else bos, frozenset(arrays["eos"].tolist()), bool(add_bos),
               frozenset(arrays["dropped"].tolist()), where, arrays["normalization"].tobytes().decode() or None)


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


def write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.{host_tag()}.partial")
    try:
        with open(partial, "wb") as f:
            np.savez(f, sha256=digest(arrays), **arrays)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def read(path: Path, made_of: Callable[[dict[str, np.ndarray]], Built]) -> Built | None:
    """What is stored at `path`, or None if there is nothing or it is not sound."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        stored = arrays.pop("sha256")
        if not np.array_equal(stored, digest(arrays)):
            return None
        return made_of(arrays)
    except (OSError, KeyError, ValueError, UnicodeDecodeError, zipfile.BadZipFile):
        return None
