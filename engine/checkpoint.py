"""Turn a checkpoint's configuration and named tensors into the engine's `Config` and `Weights`.

Tensors are checked by name and shape here, at load, so a wrong file fails with a message
naming the tensor rather than deep inside a matrix product.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath

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


# Largest value accepted for a count read from a model file (layers, heads, widths, vocabulary), and for a
# context length: larger ones are damage, and would make the engine allocate or loop for ever.
MAX_COUNT = 1 << 31
MAX_CONTEXT = 1 << 24
# Config field -> the config.json key it comes from, per model_type; the key names appear in errors.
HF_KEYS = {
    "gpt2": dict(n_vocab="vocab_size", n_ctx="n_positions", n_embd="n_embd", n_layer="n_layer", n_head="n_head",
                 n_kv_head="n_head", n_ff="n_inner", norm_eps="layer_norm_epsilon"),
    "llama": dict(n_vocab="vocab_size", n_ctx="max_position_embeddings", n_embd="hidden_size",
                  n_layer="num_hidden_layers", n_head="num_attention_heads", n_kv_head="num_key_value_heads",
                  n_ff="intermediate_size", norm_eps="rms_norm_eps", rope_theta="rope_theta"),
}


# The three choices that tell the architectures apart (engine/model.py's Config documents them).
ARCH_FLAGS = {"gpt2": dict(norm="layernorm", positions="learned", mlp="gelu"),
              "llama": dict(norm="rmsnorm", positions="rotary", mlp="swiglu")}


def read_json(path: Path):
    """A JSON file's value; any file Python cannot parse (or parses badly) is a CheckpointError."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        reason = f"{e.msg} at line {e.lineno}"
    except UnicodeDecodeError:
        reason = "not UTF-8 text"
    except RecursionError:
        reason = "nested too deeply"
    except ValueError:  # Python refuses integers of more than 4300 digits
        reason = "a number too long to read"
    raise CheckpointError(f"{path} is not valid JSON ({reason}): download it again")


def read_config_json(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory} has no config.json: is it a Hugging Face model directory?")
    return read_json(path)


def config_from_hf(hf: dict, where: str) -> Config:
    """Our Config from a Hugging Face config.json (GPT-2 or Llama), every value checked before use."""
    if not isinstance(hf, dict):
        raise CheckpointError(f"{where} is a JSON {type(hf).__name__}, not an object: download it again")
    model_type = hf.get("model_type")
    if model_type not in HF_KEYS:
        raise CheckpointError(f"{where}: model_type {short(model_type)} is not supported (llmx runs gpt2 and llama)")
    keys = HF_KEYS[model_type]
    cfg = gpt2_config(hf, keys, where) if model_type == "gpt2" else llama_config(hf, keys, where)
    check_config(cfg, keys, where)
    check_token_ids({key: hf.get(key) for key in ("bos_token_id", "eos_token_id")}, cfg.n_vocab, where)
    return cfg


def gpt2_config(hf: dict, keys: dict, where: str) -> Config:
    if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise CheckpointError(f"{where}: activation {short(hf['activation_function'])} is not supported "
                              "(llmx runs GPT-2's gelu_new)")
    n_embd, n_head = count(hf, keys["n_embd"], where), count(hf, keys["n_head"], where)
    return Config(arch="gpt2", **ARCH_FLAGS["gpt2"], d_head=n_embd // n_head, n_vocab=count(hf, keys["n_vocab"], where),
                  n_embd=n_embd,
                  n_ctx=count(hf, keys["n_ctx"], where, limit=MAX_CONTEXT), n_layer=count(hf, keys["n_layer"], where),
                  n_head=n_head, n_kv_head=n_head, n_ff=count(hf, keys["n_ff"], where, default=4 * n_embd),
                  norm_eps=positive_float(hf, keys["norm_eps"], where, default=1e-5))


def llama_config(hf: dict, keys: dict, where: str) -> Config:
    scaling = hf.get("rope_scaling")
    plain = scaling in (None, {}) or isinstance(scaling, dict) and scaling.get("rope_type", "default") == "default"
    if not plain:
        raise CheckpointError(f"{where}: rope_scaling {short(scaling)} is not supported yet")
    n_embd, n_head = count(hf, keys["n_embd"], where), count(hf, keys["n_head"], where)
    if hf.get("head_dim") is not None and (n_embd % n_head or hf["head_dim"] != n_embd // n_head):
        raise CheckpointError(f"{where}: head_dim {short(hf['head_dim'])} != hidden_size / num_attention_heads "
                              "is not supported")
    return Config(arch="llama", **ARCH_FLAGS["llama"], d_head=n_embd // n_head,
                  n_vocab=count(hf, keys["n_vocab"], where), n_embd=n_embd,
                  n_ctx=count(hf, keys["n_ctx"], where, default=2048, limit=MAX_CONTEXT),
                  n_layer=count(hf, keys["n_layer"], where), n_head=n_head,
                  n_kv_head=count(hf, keys["n_kv_head"], where, default=n_head), n_ff=count(hf, keys["n_ff"], where),
                  norm_eps=positive_float(hf, keys["norm_eps"], where, default=1e-6),
                  rope_theta=positive_float(hf, keys["rope_theta"], where, default=10000.0))


def count(values: dict, key: str, where: str, *, default: int | None = None, limit: int = MAX_COUNT) -> int:
    """values[key] as a whole number from 1 to `limit`; `default` when the key is missing or null."""
    value = values.get(key)
    if value is None:
        value = default
    if value is None:
        raise CheckpointError(f"{where} lacks {key!r}, which such a model's configuration has: is the file complete?")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= limit:
        raise CheckpointError(f"{where}: {key} is {short(value)}, but must be a whole number from 1 to {limit}: "
                              "the file is damaged; download or convert it again")
    return value


def positive_float(values: dict, key: str, where: str, *, default: float) -> float:
    value = values.get(key)
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise CheckpointError(f"{where}: {key} is {short(value)}, but must be a positive number: "
                              "the file is damaged; download or convert it again")
    return float(value)


def check_config(cfg: Config, keys: dict, where: str) -> None:
    """Head counts that divide: the reshape to [n_head, n_seq, d_head] and grouped-query attention need it.

    keys: Config field -> the name of that value in the file, for the message."""
    def fail(big: str, small: str, extra: str = ""):
        raise CheckpointError(f"{where}: {keys[big]} ({getattr(cfg, big)}) is not a multiple of {keys[small]} "
                              f"({getattr(cfg, small)}){extra}: the file is damaged; download or convert it again")

    if cfg.n_embd % cfg.n_head:
        fail("n_embd", "n_head")
    if cfg.n_head % cfg.n_kv_head:
        fail("n_head", "n_kv_head")
    if cfg.positions == "rotary" and cfg.d_head % 2:
        raise CheckpointError(f"{where}: the head size {keys['n_embd']} / {keys['n_head']} = {cfg.d_head} is odd, "
                              "but rotary positions need an even one: the file is damaged")


def check_token_ids(ids: dict, n_vocab: int, where: str) -> None:
    """Special token ids (one id, a list of ids, or None) inside the vocabulary [0, n_vocab)."""
    for key, value in ids.items():
        for token in value if isinstance(value, list) else [value]:
            if token is not None and (isinstance(token, bool) or not isinstance(token, int)
                                      or not 0 <= token < n_vocab):
                raise CheckpointError(f"{where}: {key} is {short(value)}, outside the vocabulary of {n_vocab} "
                                      "tokens: the file is damaged; download or convert it again")


def check_block_count(names, pattern: str, n_layer: int, key: str, where: str) -> None:
    """The tensors' block numbers (`pattern` captures one from a name) are exactly 0 .. n_layer-1.

    Checked before any loop over n_layer, so a damaged count fails at once rather than loop for ever."""
    blocks = {int(m[1]) for m in map(re.compile(pattern).match, names) if m}
    if len(blocks) != n_layer or (blocks and (min(blocks), max(blocks)) != (0, n_layer - 1)):  # distinct numbers
        found = f"blocks {min(blocks)}..{max(blocks)} ({len(blocks)} in all)" if blocks else "no blocks"
        raise CheckpointError(f"{where}: {key} is {n_layer}, but the file has tensors for {found}: "
                              "the configuration and weights disagree; download or convert it again")


def short(value) -> str:
    """A value from a file for a message: its repr, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


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

    blocks = tuple(Block(ln1=norm(f"h.{i}.ln_1"), w_qkv=lin(f"h.{i}.attn.c_attn", d, 3 * d),
                         w_o=lin(f"h.{i}.attn.c_proj", d, d), ln2=norm(f"h.{i}.ln_2"),
                         w_in=lin(f"h.{i}.mlp.c_fc", d, ff), w_out=lin(f"h.{i}.mlp.c_proj", ff, d))
                   for i in range(cfg.n_layer))
    wte = src.take("wte.weight", (cfg.n_vocab, d))
    return Weights(embed=wte, pos_embed=src.take("wpe.weight", (cfg.n_ctx, d)), blocks=blocks, ln_final=norm("ln_f"),
                   unembed=wte)


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
            ln1=Norm(src.take(f"model.layers.{i}.input_layernorm.weight", (d,))),
            w_qkv=Linear(qkv), w_o=Linear(w(f"{i}.self_attn.o_proj", d, cfg.n_head * dh)),
            ln2=Norm(src.take(f"model.layers.{i}.post_attention_layernorm.weight", (d,))),
            w_in=Linear(gate_up), w_out=Linear(w(f"{i}.mlp.down_proj", d, ff))))
    wte = src.take("model.embed_tokens.weight", (cfg.n_vocab, d))
    lm_head = src.tensors.get("lm_head.weight")
    lm_head = wte if lm_head is None else src.take("lm_head.weight", (cfg.n_vocab, d))
    return Weights(embed=wte, pos_embed=None, blocks=tuple(blocks), ln_final=Norm(src.take("model.norm.weight", (d,))),
                   unembed=lm_head)


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
    block = r"(?:transformer\.)?h\.(\d+)\." if cfg.arch == "gpt2" else r"model\.layers\.(\d+)\."
    check_block_count(tensors, block, cfg.n_layer, f"config.json's {HF_KEYS[cfg.arch]['n_layer']}", origin)
    return cfg, build_weights(TensorSource(tensors, origin, "GPT-2" if cfg.arch == "gpt2" else "Llama"), cfg)


def safetensors_files(directory: Path) -> list[Path]:
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = shard_names(read_json(index), index)
        missing = [s for s in shards if not (directory / s).is_file()]
        if missing:
            raise CheckpointError(f"{directory} lacks the shard {missing[0]} named in {index.name}")
        return [directory / s for s in shards]
    if any((directory / name).is_file() for name in ("pytorch_model.bin", "model.bin", "tf_model.h5")):
        raise CheckpointError(f"{directory} has only pickle/TensorFlow weights; llmx loads only model.safetensors "
                              "(never pickle files): convert it, or pick a repo that has safetensors")
    raise CheckpointError(f"{directory} has no model.safetensors: is it a Hugging Face model directory?")


def shard_names(index, path: Path) -> list[str]:
    """The shard files an index's weight_map names: relative paths inside the model folder, nothing else.

    Checked by the name alone (no `resolve()`): in the Hugging Face cache every file is a link out of the
    snapshot folder into blobs/, but a name that is absolute or climbs with `..` is never a shard."""
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(name, str) for name in weight_map.values()):
        raise CheckpointError(f"{path} has no valid weight_map (tensor name -> shard file): download it again")
    for name in weight_map.values():
        parts = PurePosixPath(name).parts
        if not parts or PurePosixPath(name).is_absolute() or ".." in parts or "\\" in name or "\0" in name:
            raise CheckpointError(f"{path} names the shard {short(name)}, which is not a file inside the model "
                                  "folder: llmx does not follow it; download the model again")
    return sorted(set(weight_map.values()))
