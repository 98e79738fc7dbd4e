"""Training data: text files or JSONL records as rows of token ids with a loss mask.

A row is n_ctx + 1 tokens: the model reads the first n_ctx and predicts the last n_ctx; `mask` says which of
those predictions count (0 for a prompt's tokens and for padding).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..tokenizer import Tokenizer


@dataclass(frozen=True)
class Dataset:
    tokens: np.ndarray  # [n_rows, n_ctx + 1] token ids
    mask: np.ndarray  # [n_rows, n_ctx] 1 where the prediction of tokens[:, 1:] counts in the loss

    def __len__(self) -> int:
        return len(self.tokens)

    def rows(self, index) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, targets, mask) of the rows `index`: what net.train_forward takes."""
        return self.tokens[index, :-1], self.tokens[index, 1:], self.mask[index]

    def split(self, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
        """(train, valid): a `fraction` of the rows, at least one, chosen at random, held out."""
        order = np.random.default_rng(seed).permutation(len(self))
        n_valid = max(1, round(fraction * len(self)))
        if n_valid >= len(self):
            raise InputError(f"--valid-fraction {fraction} leaves no training rows of {len(self)}: "
                             "give more data or a smaller fraction")
        train, valid = np.sort(order[n_valid:]), np.sort(order[:n_valid])
        return Dataset(self.tokens[train], self.mask[train]), Dataset(self.tokens[valid], self.mask[valid])


def end_of_text(tokenizer: Tokenizer) -> int:
    """The token that separates documents: the end-of-sequence token."""
    return min(tokenizer.eos_ids) if tokenizer.eos_ids else tokenizer.start_ids[0]


def windows(ids: list[int], n_ctx: int) -> np.ndarray:
    """Consecutive rows of n_ctx + 1 tokens, each starting where the last one's predictions ended: [n, n_ctx + 1]."""
    n = (len(ids) - 1) // n_ctx
    return np.array([ids[i * n_ctx:i * n_ctx + n_ctx + 1] for i in range(n)], np.int64).reshape(n, n_ctx + 1)


def from_texts(texts: list[str], tokenizer: Tokenizer, n_ctx: int, where: str) -> Dataset:
    """Texts joined with end-of-text tokens and cut into windows; every prediction counts. A model whose tokenizer
    puts BOS before every text (Gemma, Llama) sees it first in every row, as it did in its own training: Gemma 3
    270M's loss on Shakespeare is ~1.5 nats higher in a window that starts without it (the stream then has none)."""
    eot = end_of_text(tokenizer)
    bos = tokenizer.bos_id if tokenizer.add_bos else None
    lead = 0 if bos is None else 1  # encode's own BOS, left out of the stream
    ids = [t for text in texts for t in [*tokenizer.encode(text)[lead:], eot]]
    rows = windows(ids, n_ctx) if bos is None else windows_after(bos, ids, n_ctx)
    if len(rows) == 0:
        raise InputError(f"{where} has {len(ids)} tokens, fewer than one window of --ctx {n_ctx} + 1: "
                         "give more text or a smaller --ctx")
    return Dataset(rows, np.ones((len(rows), n_ctx), np.int64))


def windows_after(bos: int, ids: list[int], n_ctx: int) -> np.ndarray:
    """Rows of bos and the next n_ctx tokens, which the row predicts (the first from bos alone): [n, n_ctx + 1]."""
    n = len(ids) // n_ctx
    return np.array([[bos, *ids[i * n_ctx:(i + 1) * n_ctx]] for i in range(n)], np.int64).reshape(n, n_ctx + 1)


def from_pairs(pairs: list[tuple[str, str]], tokenizer: Tokenizer, n_ctx: int, train_on_prompt: bool) -> Dataset:
    """One row per prompt + completion (+ end of text), cut to n_ctx + 1 and padded; the loss falls on the
    completion's tokens only, unless train_on_prompt."""
    eot = end_of_text(tokenizer)
    tokens = np.full((len(pairs), n_ctx + 1), eot, np.int64)
    mask = np.zeros((len(pairs), n_ctx), np.int64)
    for row, (prompt, completion) in enumerate(pairs):
        head, tail = tokenizer.encode(prompt), [*tokenizer.encode(completion), eot]
        ids = (head + tail)[:n_ctx + 1]
        tokens[row, :len(ids)] = ids
        mask[row, :len(ids) - 1] = 1  # position t predicts token t + 1
        if not train_on_prompt:
            mask[row, :max(len(head) - 1, 0)] = 0  # predictions of prompt tokens do not count
    return Dataset(tokens, mask)


def read_jsonl(path: Path) -> list[dict]:
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path} line {number} is not JSON ({e.msg}): write one JSON object per line") from None
        if not isinstance(record, dict) or not ("text" in record or {"prompt", "completion"} <= record.keys()):
            raise InputError(f"{path} line {number} has neither \"text\" nor \"prompt\" and \"completion\": "
                             "give each line one of those")
        records.append(record)
    return records


def files(paths: list[str]) -> list[str]:
    """The paths, with each folder replaced by the *.txt and *.jsonl files in it, by name."""
    out = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = sorted(str(p) for p in path.iterdir() if p.suffix in (".txt", ".jsonl") and p.is_file())
            if not found:
                raise InputError(f"folder {name} has no .txt or .jsonl files: give files or a folder with some")
            out += found
        else:
            out.append(name)
    return out


def load_data(paths: list[str], tokenizer: Tokenizer, n_ctx: int, train_on_prompt: bool = False) -> Dataset:
    """Text files (any name but *.jsonl), JSONL files and folders of them, as one Dataset."""
    texts, pairs = [], []
    paths = files(paths)
    for name in paths:
        path = Path(name)
        try:
            if path.suffix == ".jsonl":
                for record in read_jsonl(path):
                    if "text" in record:
                        texts.append(str(record["text"]))
                    else:
                        pairs.append((str(record["prompt"]), str(record["completion"])))
            else:
                texts.append(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read {name}: {getattr(e, 'strerror', None) or e}: give a UTF-8 text file") from None
    parts = []
    if texts:
        parts.append(from_texts(texts, tokenizer, n_ctx, ", ".join(paths)))
    if pairs:
        parts.append(from_pairs(pairs, tokenizer, n_ctx, train_on_prompt))
    return Dataset(np.concatenate([p.tokens for p in parts]), np.concatenate([p.mask for p in parts]))
