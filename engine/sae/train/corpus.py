"""The text an SAE is trained on: files tokenized and cut into windows, some held out for the metrics.

Each file is tokenized alone and cut into non-overlapping windows of `window` tokens (a last, shorter
piece is dropped). Held-out text is either given (`valid`) or whole files set aside: a fraction of the
files, chosen with the seed (so with Shakespeare whole plays are held out, and the metrics measure text
the SAE never saw); with a single file, the last fraction of its windows instead.
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


def windows_of(ids: list[int], window: int) -> np.ndarray:
    """Token ids cut into non-overlapping rows of `window`: [len(ids) // window, window] int32."""
    n = len(ids) // window
    return np.asarray(ids[:n * window], dtype=np.int32).reshape(n, window)


def file_windows(files: list[Path], tokenizer: Tokenizer, window: int) -> list[np.ndarray]:
    """Each file's windows, [n_i, window]."""
    out = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read {path} as UTF-8 text ({e}): give plain text files") from None
        out.append(windows_of(tokenizer.encode(text), window))
    return out


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
                  tuple(map(str, files)), tuple(map(str, valid_files)))
