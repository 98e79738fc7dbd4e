"""Qwen2 (and Qwen2.5): Llama with biases on the query, key and value projections.

Its tensors have Llama's names in both formats, but llama.cpp's converter leaves Qwen2's query and key
rows in Hugging Face's rotate-half order (llama.cpp runs Qwen2 with NeoX-style RoPE), so nothing is
reordered here.
"""

from __future__ import annotations

from ..errors import CheckpointError
from ..formats.checks import short
from ..formats.gguf import GGUFHeader
from ..model import Config, Weights
from . import llama
from .common import TensorSource, flag

NAME, TITLE = "qwen2", "Qwen2"
MODEL_TYPES = ("qwen2",)  # config.json's model_type
GGUF_ARCHITECTURES = ("qwen2",)  # a GGUF file's general.architecture
TOKENIZER_FILES, OPTIONAL_TOKENIZER_FILES = llama.TOKENIZER_FILES, llama.OPTIONAL_TOKENIZER_FILES
GGUF_PRE_TOKENIZER = "qwen2"  # llama.cpp's name for Qwen2's split, when a file has no tokenizer.ggml.pre
HF_KEYS, HF_BLOCK = llama.HF_KEYS, llama.HF_BLOCK
tokenizer = llama.tokenizer


def config_from_hf(hf: dict, where: str) -> Config:
    """Llama's config.json fields; sliding-window attention (off in every released Qwen2) is refused."""
    layer_types = hf.get("layer_types") or []
    if flag(hf, "use_sliding_window", where, default=False) or any(t != "full_attention" for t in layer_types):
        raise CheckpointError(f"{where}: sliding-window attention (use_sliding_window, layer_types "
                              f"{short(layer_types)}) is not supported: llmx attends to the whole context")
    return llama.family_config_from_hf(hf, where, NAME, qkv_bias=True)


def config_from_gguf(header: GGUFHeader, where: str) -> Config:
    return llama.family_config_from_gguf(header, where, NAME, qkv_bias=True)


def weights_from_hf(src: TensorSource, cfg: Config) -> Weights:
    return llama.build(src, cfg, llama.HF_NAMES)


def weights_from_gguf(src: TensorSource, cfg: Config) -> Weights:
    return llama.build(src, cfg, llama.GGUF_NAMES)
