"""SentencePiece tokenizers stored in GGUF files (`tokenizer.ggml.model` = "llama": Gemma, Llama 2, Mistral).

SentencePiece's BPE starts from the text's characters (spaces written as ▁) and repeatedly merges the
adjacent pair whose merged piece is in the vocabulary with the highest score, the leftmost on a tie;
characters the vocabulary lacks become their UTF-8 bytes' <0xXX> tokens (byte fallback). That is
tiktoken's algorithm on characters instead of bytes, so it runs as a tiktoken Encoding over *ranks*:
    ranks 0..255        the single bytes (ASCII characters, or the <0xXX> tokens of other bytes)
    then                every other one-character piece, after the partial UTF-8 prefixes that build it,
                        so that every character is whole before any two characters merge
    then                the longer pieces, highest score first
and `rank_ids` maps ranks back to token ids (a partial character left over is its bytes' tokens).
The text is cut before each run of spaces that follows another character, except where a piece has such a
space inside ('>▁</' in Gemma's vocabulary): no piece spans a cut, so BPE on each part equals BPE on the
whole, and long texts stay fast. (A run of spaces stays with the word after it: in a tokenizer.json, runs
of spaces are ordinary pieces that BPE builds, see spm_json.py.)
User-defined pieces (runs of newlines or spaces, HTML tags) are always whole tokens, found before BPE,
longest first; control tokens (<bos>, <start_of_turn>) only when encode is asked for special tokens.

Runs of more than 31 spaces (Gemma's longest user-defined run): SentencePiece itself splits its input with
`matcher_->PrefixMatch(normalized, &s.freeze)` (bpe_model.cc), the longest user-defined piece at each point,
frozen so that no merge touches it, and llama.cpp's special-token partition does the same, so 40 spaces are
31 + 9. (`max_piece_length`, 16 by default, limits only the pieces training learns.) transformers' GGUF
conversion instead writes the user-defined pieces as ordinary BPE pieces built by merges, and splits such a
run 16 + 24. llmx follows SentencePiece for GGUF files, and for a tokenizer.json what that file says
(spm_json.py): the tests check both.

tiktoken takes ~0.2 s to build its tables for Gemma's 262,144 pieces, a third of a short prompt's first
token, so it is built on the first long text only: texts up to SHORT_TEXT characters go through `merge`,
the same algorithm written in Python (the tests check both on the same texts).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

from .errors import InputError, TokenizerError
from .formats.checks import check_token_ids

# GGUF token types (llama.cpp's llama_token_type).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE = "\u2581"  # ▁, SentencePiece's space
SHORT_TEXT = 2000  # characters: shorter texts are merged in Python (~10 µs a character), longer ones by tiktoken


@dataclass(frozen=True)
class SentencePieceTokenizer:
    """The interface of tokenizer.Tokenizer: encode, piece, text, decode, check_ids, start_ids."""

    ranks: dict[bytes, int]  # the pieces BPE merges to (see the module's docstring) -> rank
    rank_pieces: tuple[bytes, ...]  # [n_ranks] the bytes of each rank
    rank_ids: np.ndarray  # [n_ranks] token id of each rank; -1 for a partial character
    pieces: tuple[bytes, ...]  # [n_tokens] the bytes each token stands for
    byte_ids: np.ndarray  # [256] the <0xXX> token of each byte
    whole: dict[str, int]  # user-defined pieces, always one token each
    control: dict[str, int]  # control tokens, one token each when encode's special=True
    n_vocab: int
    bos_id: int | None
    eos_ids: frozenset[int]
    add_bos: bool = False
    pattern: str = ""  # the pre-split (`split_pattern`)
    name: str = "spm"  # for tiktoken's Encoding

    def encode(self, text: str, *, special: bool = False) -> list[int]:
        """Token ids of `text`; control-token text such as <start_of_turn> is ordinary text unless special=True."""
        text = text.replace(SPACE, " ")  # SentencePiece reads ▁ as a space
        found = {**self.whole, **self.control} if special else self.whole
        ids = [self.bos_id] if self.add_bos and self.bos_id is not None else []
        at = 0
        for match in whole_pieces(tuple(found)).finditer(text):
            ids += self.bpe(text[at:match.start()])
            ids.append(found[match.group()])
            at = match.end()
        return ids + self.bpe(text[at:])

    def bpe(self, text: str) -> list[int]:
        if not text:
            return []
        short = len(text) <= SHORT_TEXT
        ranks = np.array(self.merge(text) if short else self.encoding.encode_ordinary(text), dtype=np.int64)
        ids = self.rank_ids[ranks]
        if (ids >= 0).all():
            return ids.tolist()
        out = []
        for rank, token in zip(ranks.tolist(), ids.tolist()):  # a partial character: its bytes' tokens
            out += [token] if token >= 0 else self.byte_ids[list(self.rank_pieces[rank])].tolist()
        return out

    def merge(self, text: str) -> list[int]:
        """tiktoken's encode_ordinary in Python: each chunk of the pre-split is one rank if it is a piece
        (tiktoken looks that up first), else its bytes, repeatedly joining the adjacent pair whose join has
        the lowest rank, the leftmost on a tie."""
        out = []
        for chunk in split_regex(self.pattern).findall(text):
            chunk = chunk.encode()
            parts = [chunk] if chunk in self.ranks else [bytes([b]) for b in chunk]
            while len(parts) > 1:
                joins = [self.ranks.get(a + b, len(self.ranks)) for a, b in zip(parts, parts[1:])]
                best = min(range(len(joins)), key=joins.__getitem__)  # the first of the lowest
                if joins[best] == len(self.ranks):
                    break
                parts[best:best + 2] = [parts[best] + parts[best + 1]]
            out += [self.ranks[part] for part in parts]
        return out

    @functools.cached_property
    def encoding(self) -> "tiktoken.Encoding":  # noqa: F821 - over ranks, not token ids
        import tiktoken

        return tiktoken.Encoding(name=self.name, pat_str=self.pattern, mergeable_ranks=self.ranks, special_tokens={})

    def piece(self, token_id: int) -> bytes:
        self.check_ids([token_id])
        return self.pieces[token_id]

    def text(self, token_id: int) -> str:
        return self.piece(token_id).decode("utf-8", errors="replace")

    def decode(self, ids) -> str:
        self.check_ids(ids)
        return b"".join(self.pieces[i] for i in ids).decode("utf-8", errors="replace")

    def check_ids(self, ids) -> None:
        for i in ids:
            if not 0 <= i < min(self.n_vocab, len(self.pieces)):
                raise InputError(f"token id {i} is outside this model's vocabulary (0..{self.n_vocab - 1})")

    @property
    def start_ids(self) -> list[int]:
        return [self.bos_id] if self.bos_id is not None else [min(self.eos_ids)]


_PATTERNS: dict[tuple[str, ...], re.Pattern] = {}


@functools.cache
def split_regex(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def whole_pieces(texts: tuple[str, ...]) -> re.Pattern:
    """A regex finding any of `texts`, the longest where several start at one place."""
    if texts not in _PATTERNS:
        alternatives = sorted(texts, key=len, reverse=True) or ["(?!)"]
        _PATTERNS[texts] = re.compile("|".join(re.escape(t) if t != "(?!)" else t for t in alternatives))
    return _PATTERNS[texts]


def split_pattern(texts: list[str]) -> str:
    """The pre-split: a cut before each run of spaces after another character, except where a piece has
    such a space inside (`a▁b`, `a▁`): not cutting is always exact, so one character of lookbehind is enough."""
    inside = [t for t in texts if re.search("[^ ] ", t)]
    joins = sorted({(t[:i], t[i + 1:]) for t in inside for i in range(1, len(t)) if t[i] == " " != t[i - 1]})
    kept = "".join(f"|(?<={re.escape(left[-1])}) (?={re.escape(right)})" for left, right in joins)
    return rf" *(?:[^ ]{kept})+| +"


def gguf_sentencepiece(meta: dict, n_vocab: int, where: str) -> SentencePieceTokenizer:
    """The SentencePiece tokenizer of a GGUF file's tokenizer.ggml.* metadata."""
    tokens, types, scores = (meta.get(f"tokenizer.ggml.{key}") for key in ("tokens", "token_type", "scores"))
    if not (isinstance(tokens, list) and isinstance(types, list) and isinstance(scores, list)
            and len(tokens) == len(types) == len(scores) <= n_vocab):
        raise TokenizerError(f"{where}: tokenizer.ggml.tokens, token_type and scores are missing or of different "
                             "lengths (or longer than the embedding): the file's tokenizer is damaged; convert it again")
    if meta.get("tokenizer.ggml.add_space_prefix", False):
        raise TokenizerError(f"{where}: tokenizer.ggml.add_space_prefix is true, which llmx does not support yet")
    ids = {key: meta.get(f"tokenizer.ggml.{key}") for key in ("bos_token_id", "eos_token_id", "eot_token_id")}
    check_token_ids({f"tokenizer.ggml.{key}": value for key, value in ids.items()}, n_vocab, where)
    return sentencepiece(tokens, types, scores, n_vocab, where, bos=ids["bos_token_id"],
                         eos={ids[key] for key in ("eos_token_id", "eot_token_id") if ids[key] is not None},
                         add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", False)))


def sentencepiece(tokens: list[str], types: list[int], scores: list[float], n_vocab: int, where: str, *,
                  bos: int | None, eos: set[int], add_bos: bool) -> SentencePieceTokenizer:
    """The tokenizer of a vocabulary: each token's text (spaces as ▁ or as spaces), GGUF type and score."""
    texts = [t.replace(SPACE, " ") for t in tokens]
    ranks, rank_ids, byte_ids = build_ranks(texts, types, scores, where)
    pattern = split_pattern([t for t, kind in zip(texts, types) if kind == NORMAL])
    pieces = tuple(bytes([int(t[3:5], 16)]) if kind == BYTE else t.encode() for t, kind in zip(texts, types))
    return SentencePieceTokenizer(
        ranks, tuple(ranks), rank_ids, pieces, byte_ids,
        whole={t: i for i, (t, kind) in enumerate(zip(texts, types)) if kind == USER_DEFINED},
        control={t: i for i, (t, kind) in enumerate(zip(texts, types)) if kind == CONTROL},
        n_vocab=n_vocab, bos_id=bos, eos_ids=frozenset(eos), add_bos=add_bos, pattern=pattern, name=f"spm:{where}")


def build_ranks(texts: list[str], types: list[int], scores: list[float], where: str):
    """(tiktoken's bytes -> rank, rank -> token id, byte -> <0xXX> token id): see the module's docstring."""
    byte_ids = np.full(256, -1, np.int64)
    for i, (text, kind) in enumerate(zip(texts, types)):
        if kind == BYTE and re.fullmatch(r"<0x[0-9A-F]{2}>", text):
            byte_ids[int(text[3:5], 16)] = i
    normal = {text.encode(): i for i, (text, kind) in enumerate(zip(texts, types)) if kind == NORMAL}
    singles = [normal.get(bytes([b]), byte_ids[b]) for b in range(256)]
    if min(singles) < 0:
        raise TokenizerError(f"{where}: the vocabulary has no <0xXX> byte tokens, which llmx's SentencePiece "
                             "needs (byte fallback): pick a model whose tokenizer has them")
    ranks: dict[bytes, int] = {}
    ids: list[int] = []

    def add(piece: bytes, token: int) -> None:  # a prefix shared by two characters keeps its first rank
        if piece not in ranks:
            ranks[piece] = len(ids)
            ids.append(token)

    for b, token in enumerate(singles):
        add(bytes([b]), token)
    for char in sorted((p for p in normal if len(p) > 1 and len(p.decode()) == 1), key=normal.get):
        for n in range(2, len(char)):  # its partial UTF-8 prefixes first
            add(char[:n], -1)
        add(char, normal[char])
    for piece in sorted((p for p in normal if len(p.decode()) > 1), key=lambda p: (-scores[normal[p]], normal[p])):
        add(piece, normal[piece])
    return ranks, np.array(ids, np.int64), byte_ids
