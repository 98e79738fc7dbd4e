"""load(name): from a Hub id, a local directory or a .gguf file to a ready `LanguageModel`.

A file format (engine/formats/) gives named tensors; the architecture's module (engine/arch/) turns
them and the configuration into the engine's `Config` and `Weights`.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Callable

from .arch import config_from_hf, for_gguf
from .arch.common import TensorSource, check_block_count
from .formats import gguf
from .formats.hf import read_config_json, read_tensors, safetensors_files
from .hub import DEFAULT_MODEL, locate
from .lm import LanguageModel
from .memory import reuse_freed_memory
from .model import Config, Weights
from .packed import column_major, gguf_packed, packed
from .tokenizer import Tokenizer, gguf_bpe, gguf_tokenizer


def load(name: str = DEFAULT_MODEL, on_notice: Callable[[str], None] = lambda message: None,
         adapter: str | None = None) -> LanguageModel:
    """The model `name`; `on_notice` hears what a person may want to know (a download, a one-time packing).
    `adapter`: a folder with a PEFT LoRA adapter (from `llmx finetune`), merged into the weights."""
    path = locate(name)
    reuse_freed_memory()  # passes reuse their temporaries' memory instead of faulting it in anew (engine/memory.py)
    if path.is_file():
        config, weights, tokenizer = load_gguf(path, on_notice)  # the weights from llmx's cache after the first load
    else:
        config, weights, tokenizer = load_hf_directory(path)  # the tokenizer is checked before the pack is written
        weights = packed(weights, safetensors_files(path), on_notice)  # a no-op when every matrix is [out, in]
    model = LanguageModel(name=name, path=path, config=config, weights=weights, tokenizer=tokenizer)
    if adapter is not None:
        from .train.export import apply_adapter

        model = apply_adapter(model, Path(adapter))
    return model


def load_tokenizer(name: str = DEFAULT_MODEL) -> Tokenizer:
    """Only the tokenizer of model `name`: no weights are read (a GGUF file's header is enough)."""
    path = locate(name)
    if path.is_file():
        header = gguf.read_gguf_header(path, arrays=False)
        arch = for_gguf(header.meta.get("general.architecture"), path.name)
        return gguf_file_tokenizer(path, header, gguf.gguf_vocab_size(header), arch)
    arch, config = hf_config(path)
    return arch.tokenizer(path, config.n_vocab)


def hf_config(directory: Path) -> tuple[ModuleType, Config]:
    return config_from_hf(read_config_json(directory), str(directory / "config.json"))


def load_hf_directory(directory: Path) -> tuple[Config, Weights, Tokenizer]:
    """config.json, model.safetensors (or its shards) and the tokenizer files of a Hugging Face model folder."""
    arch, cfg = hf_config(directory)
    tensors, origin = read_tensors(directory)
    check_block_count(tensors, arch.HF_BLOCK, cfg.n_layer, f"config.json's {arch.HF_KEYS['n_layer']}", origin)
    weights = arch.weights_from_hf(TensorSource(tensors, origin, arch.TITLE), cfg)
    return cfg, weights, arch.tokenizer(directory, cfg.n_vocab)


def load_gguf(path: Path, on_notice: Callable[[str], None] = lambda message: None) -> tuple[Config, Weights, Tokenizer]:
    """A .gguf file: its header checked whole before any tensor is dequantized (to float32, once: later loads
    map the weights from llmx's cache, engine/packed.py)."""
    header = gguf.read_gguf_header(path, arrays=False)  # the vocabulary's arrays: only if the tokenizer is built
    arch = for_gguf(header.meta.get("general.architecture"), path.name)
    cfg = arch.config_from_gguf(header, path.name)
    check_block_count([t.name for t in header.tensors], gguf.BLOCK, cfg.n_layer,
                      f"{header.meta['general.architecture']}.block_count", path.name)
    gguf.check_tensor_layout(header, path)
    tokenizer = gguf_file_tokenizer(path, header, cfg.n_vocab, arch)  # before the weights

    def build() -> Weights:  # the tied embedding column-major, for decoding's unembedding (packed.column_major)
        return column_major(arch.weights_from_gguf(TensorSource(gguf.read_tensors(path, header), path.name,
                                                                arch.TITLE), cfg))

    return cfg, gguf_packed(path, cfg, build, on_notice), tokenizer


def gguf_file_tokenizer(path: Path, header: gguf.GGUFHeader, n_vocab: int, arch: ModuleType) -> Tokenizer:
    """The file's tokenizer, from a header read without arrays: after the first load it comes from llmx's cache
    (engine/tokenizer_cache.py), without reading the vocabulary again."""
    from .tokenizer_cache import cached_bpe, cached_sentencepiece

    def meta() -> dict:
        return gguf.read_gguf_header(path, arrays=gguf.TOKENIZER_ARRAYS).meta

    if header.meta.get("tokenizer.ggml.model") == "llama":
        return cached_sentencepiece([path], n_vocab, path.name, lambda: gguf_tokenizer(meta(), n_vocab, path.name,
                                                                                        arch.GGUF_PRE_TOKENIZER))
    return cached_bpe([path], n_vocab, path.name, lambda: gguf_bpe(meta(), n_vocab, path.name, arch.GGUF_PRE_TOKENIZER))
