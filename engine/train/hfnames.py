"""Training parameters under Hugging Face's names, from the architecture modules' maps (engine/arch/):
for a merged model folder, for PEFT adapters (one per Hugging Face module, so fused q/k/v and gate/up
rows are split back into q_proj, k_proj, v_proj, gate_proj, up_proj) and for tests against transformers."""

from __future__ import annotations

import numpy as np

from ..arch import llama
from ..errors import InputError
from ..model import Config
from .params import NORMS

# GPT-2's map leaves out the "transformer." prefix its PyTorch modules have (the loader accepts both).
PREFIX = {"gpt2": "transformer."}
CONV1D = {"gpt2"}  # Hugging Face stores these architectures' matrices [in, out]
# What Hugging Face stores of an RMSNorm weight, less the multiplier llmx uses: Gemma computes x / rms * (1 + w)
# and stores w (arch.gemma3.plus_one adds the 1 at load)
NORM_OFFSET = {"gemma3": 1.0}


def hf_names(cfg: Config) -> dict:
    """The architecture's engine name -> checkpoint name map (Qwen2 uses Llama's)."""
    import importlib

    try:
        module = importlib.import_module(f"..arch.{cfg.arch}", __package__)
    except ImportError:
        module = None
    names = getattr(module, "HF_NAMES", None) or (llama.HF_NAMES if cfg.arch == "qwen2" else None)
    if cfg.arch == "gemma3":  # Gemma3ForCausalLM's names (its map also reads multimodal checkpoints' prefixes)
        names = module.hf_names("model.")
    if names is None:
        raise InputError(f"llmx cannot train {cfg.arch} models yet: fine-tune a GPT-2, Llama, Qwen2 or Gemma 3 model")
    return names


def module_slices(cfg: Config) -> dict[str, tuple[tuple[str, int, int], ...]]:
    """Block-linear name -> ((Hugging Face module path with {i}, first row, end row), ...) of its output rows."""
    names, prefix = hf_names(cfg), PREFIX.get(cfg.arch, "")
    n_q, n_kv = cfg.n_head * cfg.d_head, cfg.n_kv_head * cfg.d_head
    if "q" in names:  # separate q, k, v and gate, up modules, fused by the engine
        qkv = ((names["q"], 0, n_q), (names["k"], n_q, n_q + n_kv), (names["v"], n_q + n_kv, n_q + 2 * n_kv))
        w_in = ((names["gate"], 0, cfg.n_ff), (names["up"], cfg.n_ff, 2 * cfg.n_ff))
    else:
        qkv, w_in = ((names["w_qkv"], 0, n_q + 2 * n_kv),), ((names["w_in"], 0, cfg.n_ff),)
    spans = dict(w_qkv=qkv, w_o=((names["w_o"], 0, cfg.n_embd),), w_in=w_in, w_out=((names["w_out"], 0, cfg.n_embd),))
    return {lin: tuple((prefix + path, lo, hi) for path, lo, hi in parts) for lin, parts in spans.items()}


def hf_tensors(params: dict[str, np.ndarray], cfg: Config) -> dict[str, np.ndarray]:
    """Every base parameter in `params` (not the adapters) under its Hugging Face checkpoint name."""
    names, prefix = hf_names(cfg), PREFIX.get(cfg.arch, "")
    conv1d = cfg.arch in CONV1D
    out = {}

    def put(path: str, value: np.ndarray):
        out[path if path.endswith((".weight", ".bias")) else path + ".weight"] = value

    put(prefix + names["embed"], params["embed"])
    if "pos_embed" in params:
        put(prefix + names["pos_embed"], params["pos_embed"])
    if "unembed" in params:
        put(names["unembed"], params["unembed"])
    for stem, key in (("ln_final", "ln_final"),) + tuple((f"blocks.{i}.{n}", n) for i in range(cfg.n_layer)
                                                           for n in NORMS if f"blocks.{i}.{n}.g" in params):
        i = stem.split(".")[1] if stem.startswith("blocks") else None
        path = prefix + names[key].format(i=i)
        out[path + ".weight"] = params[f"{stem}.g"]
        if f"{stem}.b" in params:
            out[path + ".bias"] = params[f"{stem}.b"]
    for lin, parts in module_slices(cfg).items():
        for i in range(cfg.n_layer):
            w, b = params[f"blocks.{i}.{lin}.w"], params.get(f"blocks.{i}.{lin}.b")
            for path, lo, hi in parts:
                path = path.format(i=i)
                out[path + ".weight"] = np.ascontiguousarray(w[lo:hi].T if conv1d else w[lo:hi])
                if b is not None:
                    out[path + ".bias"] = b[lo:hi]
    return out


def checkpoint_tensors(params: dict[str, np.ndarray], cfg: Config) -> dict[str, np.ndarray]:
    """hf_tensors as a checkpoint stores them: Gemma's norm weights as w = multiplier - 1 (in the weights' dtype;
    exact in float32 for multipliers in [0.5, 2], where the two floats share their exponent range)."""
    offset = NORM_OFFSET.get(cfg.arch)
    if offset is None:
        return hf_tensors(params, cfg)
    stored = {name: value - value.dtype.type(offset) if name.endswith(".g") else value
              for name, value in params.items()}
    return hf_tensors(stored, cfg)
