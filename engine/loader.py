"""load(name): from a Hub id, a local directory or a .gguf file to a ready `LanguageModel`."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .checkpoint import config_from_hf, load_hf_directory, read_config_json, safetensors_files
from .hub import DEFAULT_MODEL, locate
from .lm import LanguageModel
from .packed import packed
from .tokenizer import Tokenizer, gguf_tokenizer, gpt2_tokenizer


def load(name: str = DEFAULT_MODEL, on_notice: Callable[[str], None] = lambda message: None) -> LanguageModel:
    """The model `name`; `on_notice` hears what a person may want to know (a download, a one-time packing)."""
    path = locate(name)
    if path.is_file():
        from .gguf_loader import load_gguf

        config, weights, tokenizer = load_gguf(path)
    else:
        config, weights = load_hf_directory(path)
        tokenizer = hf_tokenizer(path, config)  # checked before anything is written to the cache
        if config.arch == "gpt2":
            weights = packed(weights, safetensors_files(path), on_notice)
    return LanguageModel(name=name, path=path, config=config, weights=weights, tokenizer=tokenizer)


def load_tokenizer(name: str = DEFAULT_MODEL) -> Tokenizer:
    """Only the tokenizer of model `name`: no weights are read (a GGUF file's header is enough)."""
    path = locate(name)
    if path.is_file():
        from .gguf_loader import TOKENIZER_ARRAYS, gguf_vocab_size, read_gguf_header

        header = read_gguf_header(path, arrays=TOKENIZER_ARRAYS)
        return gguf_tokenizer(header.meta, gguf_vocab_size(header), path.name)
    return hf_tokenizer(path, config_from_hf(read_config_json(path), str(path / "config.json")))


def hf_tokenizer(path: Path, config) -> Tokenizer:
    if config.arch == "gpt2" or not (path / "tokenizer.json").is_file():
        return gpt2_tokenizer(path, config.n_vocab)
    from .tokenizer import tokenizer_json_tokenizer

    return tokenizer_json_tokenizer(path, config.n_vocab)
