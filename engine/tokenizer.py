"""Tokenizers as tiktoken `Encoding`s built from a model's own vocabulary files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError, InputError, TokenizerError

# GPT-2's pre-tokenizer: contractions, letters, digits, other symbols, each with an optional leading space.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT2_EOT = "<|endoftext|>"


@dataclass(frozen=True)
class Tokenizer:
    encoding: "tiktoken.Encoding"  # noqa: F821 - imported lazily
    n_vocab: int  # the model's embedding rows; every id the tokenizer produces is below it
    bos_id: int | None  # start-of-text token, if the model has one
    eos_ids: frozenset[int]  # tokens that end a generation
    add_bos: bool = False  # whether the model expects bos_id before every prompt

    def encode(self, text: str, *, special: bool = False) -> list[int]:
        """Token ids of `text`. Special-token text such as <|endoftext|> is ordinary text unless special=True."""
        ids = self.encoding.encode(text, allowed_special="all" if special else set(), disallowed_special=())
        return ([self.bos_id] if self.add_bos and self.bos_id is not None else []) + ids

    def piece(self, token_id: int) -> bytes:
        """The bytes one token stands for (a piece of a UTF-8 character, possibly)."""
        self.check_ids([token_id])
        return self.encoding.decode_single_token_bytes(token_id)

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
    decoder = byte_decoder()
    try:
        ranks = {bytes(decoder[c] for c in token): i for token, i in vocab.items() if token not in special}
    except KeyError as e:
        raise TokenizerError(f"{where}: token piece {e} is not byte-level BPE") from None
    previous = -1
    for line in merges:
        left, _, right = line.partition(" ")
        i = vocab.get(left + right)
        if i is None or i <= previous:
            raise TokenizerError(f"{where}: the merge {line!r} does not follow the vocabulary's order; "
                                 "llmx needs a byte-level BPE whose ids grow in merge order")
        previous = i
    return ranks


def gpt2_tokenizer(directory: Path, n_vocab: int) -> Tokenizer:
    """GPT-2's byte-level BPE from the checkpoint's own vocab.json and merges.txt."""
    import tiktoken

    vocab_path, merges_path = directory / "vocab.json", directory / "merges.txt"
    for path in (vocab_path, merges_path):
        if not path.is_file():
            raise TokenizerError(f"{directory} has no {path.name}: a GPT-2 checkpoint needs vocab.json and merges.txt")
    try:
        vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
        merges = [line for line in merges_path.read_text(encoding="utf-8").split("\n")
                  if line and not line.startswith("#version")]
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerError(f"cannot read the tokenizer files in {directory} ({e}): download them again") from None
    ranks = ranks_from_vocab(vocab, merges, {GPT2_EOT}, str(directory))
    eot = vocab.get(GPT2_EOT, len(ranks))
    if eot >= n_vocab:
        raise CheckpointError(f"{directory}: the tokenizer has {eot + 1} tokens but the model only {n_vocab} rows")
    encoding = tiktoken.Encoding(name=f"gpt2:{directory}", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                                 special_tokens={GPT2_EOT: eot})
    return Tokenizer(encoding, n_vocab=n_vocab, bos_id=None, eos_ids=frozenset({eot}))
