"""What fine-tuning writes: PEFT-layout LoRA adapters, full Hugging Face model folders, and reading an adapter
back onto a base model (`load(..., adapter=DIR)`)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..formats.safetensors import read_safetensors
from .hfnames import CONV1D, checkpoint_tensors
from .lora import lora_spec, merged
from .net import Lora
from .params import to_params, to_weights

ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
LAYERS_PATTERN = {"gpt2": "h"}  # the name of the block list in the PyTorch module tree; "layers" elsewhere


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """A safetensors file: an 8-byte header length, the JSON header, then each float32 tensor's bytes."""
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def save_adapter(directory: Path, params: dict, lora: Lora, cfg, base: str, last_blocks: int | None) -> None:
    """adapter_config.json and adapter_model.safetensors as PEFT writes them: lora_A [rank, in] and
    lora_B [out, rank] per Hugging Face module, named base_model.model.<module path>.lora_A.weight."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors, targets = {}, set()
    for stem, chosen in lora.slices.items():
        for short, _, _, path in chosen:
            tensors[f"{PEFT_PREFIX}{path}.lora_A.weight"] = params[f"{stem}.lora.{short}.A"]
            tensors[f"{PEFT_PREFIX}{path}.lora_B.weight"] = params[f"{stem}.lora.{short}.B"]
            targets.add(short)
    layers = None if last_blocks is None else list(range(max(cfg.n_layer - last_blocks, 0), cfg.n_layer))
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base, "r": lora.rank,
              "lora_alpha": lora.alpha, "target_modules": sorted(targets), "lora_dropout": 0.0, "bias": "none",
              "fan_in_fan_out": cfg.arch in CONV1D, "layers_to_transform": layers,
              "layers_pattern": LAYERS_PATTERN.get(cfg.arch, "layers") if layers else None,
              "use_rslora": False, "use_dora": False, "modules_to_save": None, "inference_mode": True}
    (directory / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    write_safetensors(directory / ADAPTER_WEIGHTS, tensors)


def read_adapter(directory: Path, cfg) -> tuple[Lora, dict[str, np.ndarray]]:
    """A PEFT LoRA adapter as (spec, {engine adapter name: array}) for a base model of configuration `cfg`."""
    config_path, weights_path = directory / ADAPTER_CONFIG, directory / ADAPTER_WEIGHTS
    if not config_path.is_file() or not weights_path.is_file():
        raise InputError(f"{directory} has no {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}: "
                         "give --adapter the folder `llmx finetune` (or peft's save_pretrained) wrote")
    config = json.loads(config_path.read_text())
    if config.get("peft_type") != "LORA" or config.get("use_dora") or config.get("use_rslora") \
            or config.get("rank_pattern") or config.get("alpha_pattern"):
        raise InputError(f"{config_path}: llmx reads plain LoRA adapters (no DoRA, rsLoRA or per-module ranks)")
    tensors = read_safetensors(weights_path)
    spec = lora_spec(cfg, int(config["r"]), float(config["lora_alpha"]))
    found, slices = {}, {}
    for stem, chosen in spec.slices.items():
        for short, lo, hi, path in chosen:
            a, b = (tensors.get(f"{PEFT_PREFIX}{path}.lora_{x}.weight") for x in "AB")
            if a is None or b is None:
                continue
            if a.shape != (spec.rank, cfg_in(cfg, stem)) or b.shape != (hi - lo, spec.rank):
                raise InputError(f"{weights_path}: the adapter of {path} has shapes {a.shape}, {b.shape}, which do "
                                 "not fit this base model: give the -m it was trained on")
            found[f"{stem}.lora.{short}.A"], found[f"{stem}.lora.{short}.B"] = a, b
            slices.setdefault(stem, []).append((short, lo, hi, path))
    if not found or len(found) != len([n for n in tensors if n.endswith((".lora_A.weight", ".lora_B.weight"))]):
        raise InputError(f"{weights_path} names modules this {cfg.arch} base model lacks: "
                         "give the -m the adapter was trained on")
    return dataclasses.replace(spec, slices={k: tuple(v) for k, v in slices.items()}), found


def cfg_in(cfg, stem: str) -> int:
    """The input width of a block linear layer."""
    return {"w_qkv": cfg.n_embd, "w_in": cfg.n_embd, "w_o": cfg.n_head * cfg.d_head, "w_out": cfg.n_ff}[stem.split(".")[2]]


def apply_adapter(model, directory: Path):
    """The model with the adapter in `directory` merged into its weights (inference stays one matmul a layer)."""
    lora, adapters = read_adapter(Path(directory), model.config)
    params = to_params(model.weights) | adapters
    weights = to_weights(merged(params, lora), model.config)
    return dataclasses.replace(model, weights=weights)


def save_model_folder(directory: Path, params: dict, model) -> None:
    """A Hugging Face model folder: model.safetensors, and the base's config.json and tokenizer files (from a GGUF
    base, written from its metadata: see hffiles.py)."""
    base = Path(model.path)
    directory.mkdir(parents=True, exist_ok=True)
    if base.is_file():
        from ..arch import for_gguf
        from ..formats import gguf
        from .hffiles import write_gguf_companions

        header = gguf.read_gguf_header(base, arrays=False)
        arch = for_gguf(header.meta.get("general.architecture"), base.name)
        write_gguf_companions(directory, base, model.config, model.tokenizer, arch.GGUF_PRE_TOKENIZER)
    else:
        for name in ("config.json", "generation_config.json", "vocab.json", "merges.txt", "tokenizer.json",
                     "tokenizer_config.json", "special_tokens_map.json"):
            if (base / name).is_file():
                shutil.copy(base / name, directory / name)
    write_safetensors(directory / "model.safetensors", checkpoint_tensors(params, model.config))
