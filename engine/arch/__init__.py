"""Architectures: one module each, found through a registry (like tiktoken's ENCODING_CONSTRUCTORS).

Each module owns everything that tells its architecture apart, and nothing else in the engine asks
which architecture a model is:
    NAME, TITLE                  registry name (also Config.arch) and the name people know
    MODEL_TYPES                  config.json model_type values it reads
    GGUF_ARCHITECTURES           GGUF general.architecture values it reads
    TOKENIZER_FILES              files a Hub download needs besides config.json and the weights
    OPTIONAL_TOKENIZER_FILES     files fetched when the repo has them
    GGUF_PRE_TOKENIZER           the text split when a GGUF file names none (None: the file must name one)
    HF_KEYS                      Config field -> its config.json key, for messages
    HF_BLOCK                     regex capturing the block number of a Hugging Face tensor name
    config_from_hf(hf, where)          -> Config, every value checked
    config_from_gguf(header, where)    -> Config, every value checked
    weights_from_hf(src, cfg)          -> Weights, from Hugging Face tensor names
    weights_from_gguf(src, cfg)        -> Weights, from GGUF tensor names (no detour via Hugging Face's)
    tokenizer(directory, n_vocab)      -> Tokenizer, from the files of a Hugging Face folder
Adding an architecture is one module and one line below.
"""

from __future__ import annotations

from types import ModuleType

from ..errors import CheckpointError
from ..formats.checks import check_token_ids, short
from ..model import Config
from . import gemma3, gpt2, llama, qwen2

ARCHITECTURES: dict[str, ModuleType] = {
    "gpt2": gpt2,
    "llama": llama,
    "qwen2": qwen2,
    "gemma3": gemma3,
}


def find_model_type(model_type) -> ModuleType | None:
    """The module that reads config.json's `model_type`, or None."""
    return next((arch for arch in ARCHITECTURES.values() if model_type in arch.MODEL_TYPES), None)


def for_model_type(model_type, where: str) -> ModuleType:
    arch = find_model_type(model_type)
    if arch is None:
        raise CheckpointError(f"{where}: model_type {short(model_type)} is not supported (llmx runs "
                              f"{supported()}): pick a {titles()} model")
    return arch


def for_gguf(name, where: str) -> ModuleType:
    """The module that reads a GGUF file whose general.architecture is `name`."""
    arch = next((arch for arch in ARCHITECTURES.values() if name in arch.GGUF_ARCHITECTURES), None)
    if arch is None:
        raise CheckpointError(f"{where}: architecture {short(name)} is not supported (llmx runs "
                              f"{supported(gguf=True)} GGUF files): pick a {titles(gguf=True)} model")
    return arch


def config_from_hf(hf, where: str) -> tuple[ModuleType, Config]:
    """The architecture module and our Config for a Hugging Face config.json's value."""
    if not isinstance(hf, dict):
        raise CheckpointError(f"{where} is a JSON {type(hf).__name__}, not an object: download it again")
    arch = for_model_type(hf.get("model_type"), where)
    cfg = arch.config_from_hf(hf, where)
    check_token_ids({key: hf.get(key) for key in ("bos_token_id", "eos_token_id")}, cfg.n_vocab, where)
    return arch, cfg


def supported(gguf: bool = False) -> str:
    """"gpt2, llama and qwen2": the architectures read from Hugging Face folders (or from GGUF files)."""
    return _listing([name for name, arch in _reading(gguf)], "and")


def titles(gguf: bool = False) -> str:
    """"GPT-2, Llama or Qwen2": the same, by the names people know."""
    return _listing([arch.TITLE for _, arch in _reading(gguf)], "or")


def _reading(gguf: bool) -> list[tuple[str, ModuleType]]:
    return [(name, arch) for name, arch in ARCHITECTURES.items()
            if (arch.GGUF_ARCHITECTURES if gguf else arch.MODEL_TYPES)]


def _listing(names: list[str], word: str) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {word} {names[-1]}"
