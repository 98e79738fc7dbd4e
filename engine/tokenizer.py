"""Tokenizers as tiktoken `Encoding`s built from a model's own vocabulary: byte-level BPE (from GGUF metadata here,
from Hugging Face folders in hf_tokenizer.py; SentencePiece in spm.py)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np

from .errors import CheckpointError, InputError, TokenizerError
from .formats.checks import check_token_ids

# GPT-2's pre-tokenizer: contractions, letters, digits, other symbols, each with an optional leading space.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# SmolLM's: every digit alone, then GPT-2's pattern on the text between digits. In one pattern, a run
# of spaces before a digit is one piece (it ended a stretch between digits), hence \s+(?=\p{N}).
SMOLLM_PATTERN = r"""\p{N}|'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?=\p{N})|\s+(?!\S)|\s+"""
# Llama 3's (OpenAI's cl100k): contractions in any case, numbers in groups of up to three, newlines apart.
LLAMA3_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                  r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
# Qwen2's: Llama 3's, but every digit alone.
QWEN2_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                 r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
# llama.cpp's names for pre-tokenizers (GGUF `tokenizer.ggml.pre`).
PRE_PATTERNS = {"gpt-2": GPT2_PATTERN, "smollm": SMOLLM_PATTERN, "llama-bpe": LLAMA3_PATTERN,
                "llama3": LLAMA3_PATTERN, "llama-v3": LLAMA3_PATTERN, "qwen2": QWEN2_PATTERN}
GPT2_EOT = "<|endoftext|>"
UNICODE_FORMS = ("NFC", "NFD", "NFKC", "NFKD")  # tokenizer.json normalizers that are one unicodedata.normalize
# GGUF token types (llama.cpp's llama_token_type) that are whole tokens rather than byte-level pieces.
GGUF_CONTROL, GGUF_USER_DEFINED = 3, 4


@dataclass(frozen=True)
class Tokenizer:
    encoding: "tiktoken.Encoding"  # noqa: F821 - imported lazily
    n_vocab: int  # the model's embedding rows; every id the tokenizer produces is below it
    bos_id: int | None  # start-of-text token, if the model has one
    eos_ids: frozenset[int]  # tokens that end a generation
    add_bos: bool = False  # whether the model expects bos_id before every prompt
    dropped_ids: frozenset[int] = frozenset()  # stand-ins for bytes the vocabulary lacks (see `fill_missing_bytes`)
    normalization: str | None = None  # Unicode form ("NFC", ...) the text is put in before splitting (Qwen2)

    def encode(self, text: str, *, special: bool = False) -> list[int]:
        """Token ids of `text`. Special-token text such as <|endoftext|> is ordinary text unless special=True."""
        if self.normalization:
            text = unicodedata.normalize(self.normalization, text)
        ids = self.encoding.encode(text, allowed_special="all" if special else set(), disallowed_special=())
        if self.dropped_ids:  # like Hugging Face's byte-level BPE, bytes with no token are left out
            ids = [i for i in ids if i not in self.dropped_ids]
        return ([self.bos_id] if self.add_bos and self.bos_id is not None else []) + ids

    def piece(self, token_id: int) -> bytes:
        """The bytes one token stands for (a piece of a UTF-8 character, possibly)."""
        self.check_ids([token_id])
        return self.encoding.decode_single_token_bytes(token_id)

    def text(self, token_id: int) -> str:
        """One token's text; bytes that are not whole UTF-8 characters become U+FFFD."""
        return self.piece(token_id).decode("utf-8", errors="replace")

    def decode(self, ids) -> str:
        self.check_ids(ids)
        return self.encoding.decode_bytes(list(ids)).decode("utf-8", errors="replace")

    def check_ids(self, ids) -> None:
        for i in ids:
            if not 0 <= i < self.n_vocab or i > self.encoding.max_token_value:
                raise InputError(f"token id {i} is outside this model's vocabulary (0..{self.n_vocab - 1})")

    @property
    def start_ids(self) -> list[int]:
        """What an empty prompt conditions on: the start-of-text token (<|endoftext|> for GPT-2)."""
        if self.bos_id is not None:
            return [self.bos_id]
        return [min(self.eos_ids)]


def byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable character that stands for each of the 256 bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    chars = {b: b for b in printable}
    for n, b in enumerate(b for b in range(256) if b not in chars):
        chars[b] = 256 + n  # bytes without a printable form are shifted past the 256 code points
    return {chr(c): b for b, c in chars.items()}


def ranks_from_vocab(vocab: dict[str, int], merges: list[str], special: set[str], where: str) -> dict[bytes, int]:
    """tiktoken's mergeable ranks from a byte-level BPE vocabulary, ranked by the model's own ids.

    tiktoken merges the pair whose result has the lowest rank, Hugging Face the pair whose merge
    comes first; the two agree when ids grow in merge order, which is checked here.
    """
    to_latin1 = str.maketrans({c: chr(b) for c, b in byte_decoder().items()})  # each byte as U+0000..U+00FF
    try:  # translate + encode run in C: several times faster than a Python loop over every character
        ranks = {token.translate(to_latin1).encode("latin-1"): i for token, i in vocab.items() if token not in special}
    except UnicodeEncodeError as e:
        raise TokenizerError(f"{where}: token piece {e.object!r} is not byte-level BPE") from None
    # Byte-level pieces never contain a space, so "left right" -> "leftright" is the merged token.
    merged = np.fromiter((vocab.get(line.replace(" ", ""), -1) for line in merges), np.int64, len(merges))
    out_of_order = np.flatnonzero((merged < 0) | (np.diff(merged, prepend=-1) <= 0))
    if out_of_order.size:
        raise TokenizerError(f"{where}: the merge {merges[out_of_order[0]]!r} does not follow the vocabulary's "
                             "order; llmx needs a byte-level BPE whose ids grow in merge order")
    return ranks


def fill_missing_bytes(ranks: dict[bytes, int], first_free: int) -> tuple[dict[bytes, int], frozenset[int]]:
    """Ranks for the single bytes a vocabulary lacks, from `first_free` on, and the ids given to them.

    tiktoken needs a token for every byte, but some vocabularies have none for bytes never seen in
    training (SmolLM2 lacks 0x04, 0xF1, ...). Hugging Face leaves such bytes out, and so does encode.
    """
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    extra = {bytes([b]): first_free + n for n, b in enumerate(missing)}
    return {**ranks, **extra}, frozenset(extra.values())


@dataclass(frozen=True)
class BPE:
    """What a byte-level BPE tokenizer is built from, as tiktoken takes it (tokenizer_cache.py stores it, so that
    a later load skips reading and ranking the vocabulary)."""

    ranks: dict[bytes, int]  # each mergeable piece's bytes and rank, its token id (fill_missing_bytes' included)
    special: dict[str, int]  # whole tokens, matched as text only when asked (`encode(special=True)`)
    pattern: str  # the pre-tokenizer's split regex
    n_vocab: int
    bos: int | None
    eos: frozenset[int]
    add_bos: bool
    dropped: frozenset[int]  # fill_missing_bytes' stand-ins
    where: str  # where it came from, for its name
    normalization: str | None = None  # Unicode form the text is put in first (a tokenizer.json's normalizer)

    def tokenizer(self) -> Tokenizer:
        import tiktoken

        encoding = tiktoken.Encoding(name=f"bpe:{self.where}", pat_str=self.pattern, mergeable_ranks=self.ranks,
                                     special_tokens=self.special)
        return Tokenizer(encoding, n_vocab=self.n_vocab, bos_id=self.bos, eos_ids=self.eos, add_bos=self.add_bos,
                         dropped_ids=self.dropped, normalization=self.normalization)


def bpe(vocab: dict[str, int], merges: list[str], special: dict[str, int], pattern: str, *, n_vocab: int,
        bos: int | None, eos: set[int], add_bos: bool, where: str) -> BPE:
    """A byte-level BPE from its vocabulary and merges: vocab pieces in GPT-2's byte alphabet, special tokens apart."""
    ranks = ranks_from_vocab(vocab, merges, set(special), where)
    top = max([*ranks.values(), *special.values()])
    if top >= n_vocab:
        raise CheckpointError(f"{where}: the tokenizer has {top + 1} tokens but the model only {n_vocab} rows")
    ranks, dropped = fill_missing_bytes(ranks, n_vocab)
    return BPE(ranks, special, pattern, n_vocab, bos, frozenset(eos), add_bos, dropped, where)


def gguf_tokenizer(meta: dict, n_vocab: int, where: str, default_pre: str | None) -> Tokenizer:
    """The byte-level BPE (or SentencePiece, see spm.py) in a GGUF file's `tokenizer.ggml.*` metadata.

    default_pre: the pre-tokenizer when the file names none (the architecture's own), or None to refuse."""
    if meta.get("tokenizer.ggml.model") == "llama":  # SentencePiece
        from .spm import gguf_sentencepiece

        return gguf_sentencepiece(meta, n_vocab, where)
    return gguf_bpe(meta, n_vocab, where, default_pre).tokenizer()


def gguf_bpe(meta: dict, n_vocab: int, where: str, default_pre: str | None) -> BPE:
    """The byte-level BPE in a GGUF file's metadata (see gguf_tokenizer)."""
    model = meta.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise TokenizerError(f"{where}: tokenizer.ggml.model is {model!r}, but llmx runs byte-level BPE ('gpt2') "
                             "and SentencePiece ('llama') tokenizers: pick a model with one of those")
    pre = meta.get("tokenizer.ggml.pre", default_pre)
    if pre is None:
        raise TokenizerError(f"{where} has no tokenizer.ggml.pre, so how to split text into words is unknown: "
                             f"convert it again with a recent llama.cpp (llmx knows {', '.join(PRE_PATTERNS)})")
    if not isinstance(pre, str) or pre not in PRE_PATTERNS:
        raise TokenizerError(f"{where}: pre-tokenizer {pre!r:.60} (tokenizer.ggml.pre) is not supported; "
                             f"llmx knows {', '.join(PRE_PATTERNS)}")
    tokens, merges = (_gguf_strings(meta, key, where) for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"))
    types = meta.get("tokenizer.ggml.token_type") or []
    if not isinstance(types, list) or not all(isinstance(kind, int) for kind in types):
        raise TokenizerError(f"{where}: tokenizer.ggml.token_type is not a list of numbers: convert the file again")
    special = {token: i for i, (token, kind) in enumerate(zip(tokens, types))
               if kind in (GGUF_CONTROL, GGUF_USER_DEFINED)}
    ids = {key: meta.get(f"tokenizer.ggml.{key}") for key in ("bos_token_id", "eos_token_id", "eot_token_id")}
    check_token_ids({f"tokenizer.ggml.{key}": value for key, value in ids.items()}, n_vocab, where)
    eos = {ids[key] for key in ("eos_token_id", "eot_token_id") if ids[key] is not None}
    return bpe({token: i for i, token in enumerate(tokens)}, merges, special, PRE_PATTERNS[pre], n_vocab=n_vocab,
               bos=ids["bos_token_id"], eos=eos, add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", False)),
               where=where)


def _gguf_strings(meta: dict, key: str, where: str) -> list[str]:
    value = meta.get(key)
    if value is None:
        raise TokenizerError(f"{where} has no {key}: the file's tokenizer is incomplete, convert it again")
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TokenizerError(f"{where}: {key} is not a list of strings: the file's tokenizer is damaged, "
                             "convert it again")
    return value
