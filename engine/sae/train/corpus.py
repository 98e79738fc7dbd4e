"""The text an SAE is trained on: files tokenized and cut into windows, some held out for the metrics.

Each file is tokenized alone and cut into non-overlapping windows of `window` tokens (a last, shorter
piece is dropped), each beginning with the model's start token when its tokenizer adds one. Held-out text
is either given (`valid`) or whole files set aside: a fraction of the files, chosen with the seed (so with
Shakespeare whole plays are held out, and the metrics measure text the SAE never saw); with a single file,
the last fraction of its windows instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import InputError
from ...tokenizer import Tokenizer


@dataclass(frozen=True)
class Corpus:
    train: np.ndarray  # [n_windows, window] int32 token ids, in a seeded random order
    valid: np.ndarray  # [n_valid_windows, window] int32 held-out windows
    train_files: tuple[str, ...]  # the files the training windows come from
    valid_files: tuple[str, ...]  # the held-out files (the single file itself when its tail is held out)
    starts_with_bos: bool = False  # whether every window begins with the model's start token


def text_files(paths: list[str]) -> list[Path]:
    """The files named, with a folder standing for the .txt files in it (sorted); a missing one is an error."""
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = sorted(path.glob("*.txt"))
            if not found:
                raise InputError(f"{name} has no .txt files: give text files or a folder of them")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"no such file: {name}: give text files (or folders of .txt files) to --data")
    return files


def windows_of(ids: list[int], window: int, start: list[int]) -> np.ndarray:
    """Token ids cut into non-overlapping rows of `window`, each beginning with `start` (the model's start
    token, or nothing): [n, window] int32."""
    per = window - len(start)
    n = len(ids) // per
    rows = np.asarray(ids[:n * per], dtype=np.int32).reshape(n, per)
    return np.concatenate([np.full((n, len(start)), start, np.int32), rows], axis=1) if start else rows


def file_windows(files: list[Path], tokenizer: Tokenizer, window: int) -> list[np.ndarray]:
    """Each file's windows, [n_i, window]. Each window is a sequence of its own, so with a tokenizer that
    starts texts with a start token (Gemma's <bos>, without which Gemma 3 loses 1.5 nats a token) every
    window begins with it, as SAELens' windows do."""
    start = start_token(tokenizer)
    out = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read {path} as UTF-8 text ({e}): give plain text files") from None
        ids = tokenizer.encode(text)
        out.append(windows_of(ids[1:] if start and ids[:1] == start else ids, window, start))
    return out


def start_token(tokenizer: Tokenizer) -> list[int]:
    """[the start token] when the tokenizer starts every text with one, else []."""
    return [tokenizer.bos_id] if tokenizer.add_bos and tokenizer.bos_id is not None else []


def stacked(parts: list[np.ndarray], window: int) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0, window), np.int32)


def load_corpus(paths: list[str], valid_paths: list[str] | None, tokenizer: Tokenizer, window: int,
                valid_fraction: float, seed: int) -> Corpus:
    """Training and held-out windows; training windows shuffled with `seed` (a --tokens cap then takes a
    sample of every file, not the first files)."""
    files = text_files(paths)
    rng = np.random.default_rng(seed)
    if valid_paths:
        valid_files = text_files(valid_paths)
        train, valid = file_windows(files, tokenizer, window), file_windows(valid_files, tokenizer, window)
    elif len(files) > 1:
        n_valid = max(1, round(valid_fraction * len(files)))
        held = set(rng.permutation(len(files))[:n_valid].tolist())
        valid_files = [f for i, f in enumerate(files) if i in held]
        files = [f for i, f in enumerate(files) if i not in held]
        train, valid = file_windows(files, tokenizer, window), file_windows(valid_files, tokenizer, window)
    else:
        (rows,) = file_windows(files, tokenizer, window)
        cut = len(rows) - max(1, round(valid_fraction * len(rows)))
        train, valid, valid_files = [rows[:cut]], [rows[cut:]], files
    train_rows = stacked(train, window)
    if len(train_rows) == 0 or sum(len(v) for v in valid) == 0:
        raise InputError(f"not enough text for one window of {window} tokens to train on and one to hold out: "
                         "give more text, or a smaller --window")
    return Corpus(train_rows[rng.permutation(len(train_rows))], stacked(valid, window),
                  tuple(map(str, files)), tuple(map(str, valid_files)), bool(start_token(tokenizer)))
