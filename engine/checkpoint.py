"""Turn a checkpoint's configuration and named tensors into the engine's `Config` and `Weights`.

Tensors are checked by name and shape here, at load, so a wrong file fails with a message
naming the tensor rather than deep inside a matrix product.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import CheckpointError
from .model import Block, Config, Linear, Norm, Weights
from .safetensors_mmap import read_safetensors


class TensorSource:
    """Named float32 tensors plus where they came from, for error messages."""

    def __init__(self, tensors: dict[str, np.ndarray], origin: str, arch: str):
        self.tensors, self.origin, self.arch = tensors, origin, arch

    def take(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in self.tensors:
            raise CheckpointError(f"{self.origin} has no tensor '{name}': is this a {self.arch} checkpoint?")
        array = self.tensors[name]
        if array.shape != shape:
            raise CheckpointError(f"tensor '{name}' in {self.origin} has shape {list(array.shape)}, "
                                  f"but the configuration implies {list(shape)}: the config and weights disagree")
        return array


def read_config_json(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory} has no config.json: is it a Hugging Face model directory?")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}): download it again") from None


def config_from_hf(hf: dict, where: str) -> Config:
    """Our Config from a Hugging Face config.json (GPT-2 or Llama)."""
    model_type = hf.get("model_type")
    try:
        if model_type == "gpt2":
            if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
                raise CheckpointError(f"{where}: activation {hf['activation_function']!r} is not supported "
                                      "(llmx runs GPT-2's gelu_new)")
            return Config(arch="gpt2", n_vocab=hf["vocab_size"], n_ctx=hf["n_positions"], n_embd=hf["n_embd"],
                          n_layer=hf["n_layer"], n_head=hf["n_head"], n_kv_head=hf["n_head"],
                          n_ff=hf.get("n_inner") or 4 * hf["n_embd"], norm_eps=hf.get("layer_norm_epsilon", 1e-5))
        if model_type == "llama":
            if hf.get("rope_scaling") not in (None, {}) and hf["rope_scaling"].get("rope_type", "default") != "default":
                raise CheckpointError(f"{where}: rope_scaling {hf['rope_scaling']} is not supported yet")
            n_embd, n_head = hf["hidden_size"], hf["num_attention_heads"]
            if hf.get("head_dim") not in (None, n_embd // n_head):
                raise CheckpointError(f"{where}: head_dim {hf['head_dim']} != hidden_size / num_attention_heads "
                                      "is not supported")
            return Config(arch="llama", n_vocab=hf["vocab_size"], n_ctx=hf.get("max_position_embeddings", 2048),
                          n_embd=n_embd, n_layer=hf["num_hidden_layers"], n_head=n_head,
                          n_kv_head=hf.get("num_key_value_heads") or n_head, n_ff=hf["intermediate_size"],
                          norm_eps=hf.get("rms_norm_eps", 1e-6), rope_theta=float(hf.get("rope_theta", 10000.0)))
    except KeyError as e:
        raise CheckpointError(f"{where} lacks the key {e} that a {model_type} config has: is the file complete?") \
            from None
    raise CheckpointError(f"{where}: model_type {model_type!r} is not supported (llmx runs gpt2 and llama)")


def gpt2_weights(src: TensorSource, cfg: Config) -> Weights:
    """GPT-2 tensors (Hugging Face Conv1D layout, [in, out]) with or without the `transformer.` prefix.

    Matrices become transposed views, [out, in], without a copy: the memory map stays the only copy.
    """
    src.tensors = {name.removeprefix("transformer."): t for name, t in src.tensors.items()}
    d, ff = cfg.n_embd, cfg.n_ff

    def norm(name):
        return Norm(src.take(f"{name}.weight", (d,)), src.take(f"{name}.bias", (d,)))

    def lin(name, n_in, n_out):
        return Linear(src.take(f"{name}.weight", (n_in, n_out)).T, src.take(f"{name}.bias", (n_out,)))

    blocks = tuple(Block(ln_1=norm(f"h.{i}.ln_1"), c_attn=lin(f"h.{i}.attn.c_attn", d, 3 * d),
                         c_proj=lin(f"h.{i}.attn.c_proj", d, d), ln_2=norm(f"h.{i}.ln_2"),
                         c_fc=lin(f"h.{i}.mlp.c_fc", d, ff), mlp_c_proj=lin(f"h.{i}.mlp.c_proj", ff, d))
                   for i in range(cfg.n_layer))
    wte = src.take("wte.weight", (cfg.n_vocab, d))
    return Weights(wte=wte, wpe=src.take("wpe.weight", (cfg.n_ctx, d)), blocks=blocks, ln_f=norm("ln_f"),
                   lm_head=wte)


def llama_weights(src: TensorSource, cfg: Config) -> Weights:
    """Llama tensors in Hugging Face's names and [out, in] layout; Q, K, V and gate, up are fused here."""
    d, ff, dh = cfg.n_embd, cfg.n_ff, cfg.d_head

    def w(name, n_out, n_in):  # [out, in], the engine's layout too
        return src.take(f"model.layers.{name}.weight", (n_out, n_in))

    blocks = []
    for i in range(cfg.n_layer):
        qkv = np.concatenate([w(f"{i}.self_attn.q_proj", cfg.n_head * dh, d),
                              w(f"{i}.self_attn.k_proj", cfg.n_kv_head * dh, d),
                              w(f"{i}.self_attn.v_proj", cfg.n_kv_head * dh, d)])  # [(n_head + 2 n_kv) d_head, d]
        gate_up = np.concatenate([w(f"{i}.mlp.gate_proj", ff, d), w(f"{i}.mlp.up_proj", ff, d)])  # [2 ff, d]
        blocks.append(Block(
            ln_1=Norm(src.take(f"model.layers.{i}.input_layernorm.weight", (d,))),
            c_attn=Linear(qkv), c_proj=Linear(w(f"{i}.self_attn.o_proj", d, cfg.n_head * dh)),
            ln_2=Norm(src.take(f"model.layers.{i}.post_attention_layernorm.weight", (d,))),
            c_fc=Linear(gate_up), mlp_c_proj=Linear(w(f"{i}.mlp.down_proj", d, ff))))
    wte = src.take("model.embed_tokens.weight", (cfg.n_vocab, d))
    lm_head = src.tensors.get("lm_head.weight")
    lm_head = wte if lm_head is None else src.take("lm_head.weight", (cfg.n_vocab, d))
    return Weights(wte=wte, wpe=None, blocks=tuple(blocks), ln_f=Norm(src.take("model.norm.weight", (d,))),
                   lm_head=lm_head)


def build_weights(src: TensorSource, cfg: Config) -> Weights:
    return gpt2_weights(src, cfg) if cfg.arch == "gpt2" else llama_weights(src, cfg)


def load_hf_directory(directory: Path) -> tuple[Config, Weights]:
    """config.json plus model.safetensors (or its shards) from a Hugging Face model directory."""
    cfg = config_from_hf(read_config_json(directory), str(directory / "config.json"))
    files = safetensors_files(directory)
    tensors: dict[str, np.ndarray] = {}
    for path in files:
        tensors.update(read_safetensors(path))
    origin = files[0].name + (f" (and {len(files) - 1} more shards)" if len(files) > 1 else "") + f" in {directory}"
    return cfg, build_weights(TensorSource(tensors, origin, "GPT-2" if cfg.arch == "gpt2" else "Llama"), cfg)


def safetensors_files(directory: Path) -> list[Path]:
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [s for s in shards if not (directory / s).is_file()]
        if missing:
            raise CheckpointError(f"{directory} lacks the shard {missing[0]} named in {index.name}")
        return [directory / s for s in shards]
    if any((directory / name).is_file() for name in ("pytorch_model.bin", "model.bin", "tf_model.h5")):
        raise CheckpointError(f"{directory} has only pickle/TensorFlow weights; llmx loads only model.safetensors "
                              "(never pickle files): convert it, or pick a repo that has safetensors")
    raise CheckpointError(f"{directory} has no model.safetensors: is it a Hugging Face model directory?")
