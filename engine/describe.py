"""describe(path): what a model file is (architecture, size, quantization), from its headers alone.

Nothing is dequantized or even read beyond the headers, so this is fast for any model size.
A .gguf header is read without its arrays (the vocabulary), so even that takes milliseconds.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from .arch import config_from_hf
from .formats.gguf import read_gguf_header
from .formats.hf import read_config_json, safetensors_files
from .formats.safetensors import read_header


def describe(path) -> dict:
    """architecture, parameters, quantization, context_length, n_layer, n_embd, n_head, n_kv_head,
    vocab_size, file_size (bytes of the weight files) and format, for a .gguf file or a Hugging Face directory."""
    path = Path(path)
    return describe_gguf(path) if path.is_file() else describe_hf_directory(path)


def describe_hf_directory(directory: Path) -> dict:
    _, cfg = config_from_hf(read_config_json(directory), str(directory / "config.json"))
    files = safetensors_files(directory)
    counts: Counter[str] = Counter()  # parameters per dtype
    for path in files:
        for info in read_header(path)[0].values():
            counts[info["dtype"]] += math.prod(info["shape"])
    return dict(format="safetensors", architecture=cfg.arch, parameters=sum(counts.values()),
                quantization=quantization_label(counts), context_length=cfg.n_ctx, n_layer=cfg.n_layer,
                n_embd=cfg.n_embd, n_head=cfg.n_head, n_kv_head=cfg.n_kv_head, vocab_size=cfg.n_vocab,
                file_size=sum(p.stat().st_size for p in files))


def describe_gguf(path: Path) -> dict:
    header = read_gguf_header(path, arrays=False)
    meta, tensors = header.meta, header.tensors
    arch = meta.get("general.architecture")
    counts: Counter[str] = Counter()
    for t in tensors:
        counts[t.kind.name] += math.prod(t.shape)
    embedding = next((t.shape for t in tensors if t.name == "token_embd.weight"), None)
    n_head = meta.get(f"{arch}.attention.head_count")
    return dict(format="gguf", architecture=arch, parameters=sum(counts.values()),
                quantization=quantization_label(counts), context_length=meta.get(f"{arch}.context_length"),
                n_layer=meta.get(f"{arch}.block_count"), n_embd=meta.get(f"{arch}.embedding_length"),
                n_head=n_head, n_kv_head=meta.get(f"{arch}.attention.head_count_kv", n_head),
                vocab_size=embedding[0] if embedding else meta.get(f"{arch}.vocab_size"),
                file_size=path.stat().st_size)


def quantization_label(counts: Counter) -> str:
    """The type holding most parameters, then the others by size: "Q4_1 (+Q8_0, F32)"."""
    kinds = [kind for kind, _ in counts.most_common()]
    if not kinds:
        return "none"
    return kinds[0] + (f" (+{', '.join(kinds[1:])})" if len(kinds) > 1 else "")


def describe_adapter(directory) -> dict:
    """adapter (its folder), adapter_base, adapter_rank, adapter_alpha, adapter_targets and adapter_parameters of a
    PEFT LoRA adapter folder, from adapter_config.json and the weights' header, as its files say."""
    import json

    from .errors import InputError
    from .train.export import ADAPTER_CONFIG, ADAPTER_WEIGHTS

    directory = Path(directory)
    config_path, weights_path = directory / ADAPTER_CONFIG, directory / ADAPTER_WEIGHTS
    if not config_path.is_file() or not weights_path.is_file():
        raise InputError(f"{directory} has no {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}: "
                         "give --adapter the folder `llmx finetune` (or peft's save_pretrained) wrote")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{config_path} is not valid JSON ({e}): is it a PEFT adapter's config?") from None
    header = read_header(weights_path)[0]
    return dict(adapter=str(directory), adapter_base=config.get("base_model_name_or_path"),
                adapter_rank=config.get("r"), adapter_alpha=config.get("lora_alpha"),
                adapter_targets=", ".join(config.get("target_modules") or []),
                adapter_parameters=sum(math.prod(info["shape"]) for info in header.values()))
