"""Sparse autoencoder folders in SAELens' format, written by the tests: cfg.json (SAELens >= 6 or older style),
sae_weights.safetensors, optionally sparsity.safetensors and llmx's llmx_index.safetensors.

    weights = write_sae(folder, d_in=64, d_sae=96, architecture="topk", k=8)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def random_weights(d_in: int, d_sae: int, seed: int = 0, threshold: bool = False) -> dict[str, np.ndarray]:
    """W_enc, W_dec (unit rows), b_enc, b_dec (and a positive threshold), float32, with nonzero biases."""
    rng = np.random.default_rng(seed)
    w_dec = rng.standard_normal((d_sae, d_in))
    w_dec /= np.linalg.norm(w_dec, axis=1, keepdims=True)
    weights = {"W_enc": rng.standard_normal((d_in, d_sae)) / np.sqrt(d_in), "W_dec": w_dec,
               "b_enc": rng.standard_normal(d_sae) * 0.1, "b_dec": rng.standard_normal(d_in) * 0.1}
    if threshold:
        weights["threshold"] = rng.uniform(0.05, 0.3, d_sae)
    return {name: np.ascontiguousarray(array, dtype=np.float32) for name, array in weights.items()}


def new_cfg(d_in: int, d_sae: int, architecture: str, hook: str, k: int | None = None,
            normalize: str = "none", apply_b_dec_to_input: bool = True, **extra) -> dict:
    """cfg.json as SAELens >= 6 writes it: the hook in metadata, `k` on top for topk."""
    cfg = {"architecture": architecture, "d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": apply_b_dec_to_input, "normalize_activations": normalize,
           "reshape_activations": "none",
           "metadata": {"model_name": "tiny", "hook_name": hook, "prepend_bos": True,
                        "sae_lens_version": "6.12.1"}}
    if k is not None:
        cfg["k"] = k
    return {**cfg, **extra}


def old_cfg(d_in: int, d_sae: int, architecture: str, hook: str, k: int | None = None,
            normalize: str = "none", apply_b_dec_to_input: bool = True, **extra) -> dict:
    """cfg.json as SAELens < 6 wrote it: hook_point, activation_fn_str (topk through activation_fn_kwargs),
    normalize_activations a flag before SAELens 3 (for 'none' and 'expected_average_only_in')."""
    flag = {"none": False, "expected_average_only_in": True}
    cfg = {"model_name": "tiny", "hook_point": hook, "hook_point_layer": int(hook.split(".")[1]),
           "hook_point_head_index": None, "d_in": d_in, "d_sae": d_sae, "dtype": "torch.float32",
           "activation_fn_str": "topk" if architecture == "topk" else "relu",
           "apply_b_dec_to_input": apply_b_dec_to_input,
           "normalize_activations": flag.get(normalize, normalize), "sae_lens_version": "3.13.0"}
    if architecture == "jumprelu":
        cfg["architecture"] = "jumprelu"
    if k is not None:
        cfg["activation_fn_kwargs"] = {"k": k}
    return {**cfg, **extra}


def write_sae(folder: Path, d_in: int, d_sae: int, architecture: str = "standard", hook: str = "blocks.1.hook_resid_pre",
              *, k: int | None = None, normalize: str = "none", style: str = "new", seed: int = 0,
              apply_b_dec_to_input: bool = True, sparsity: bool = False, **extra) -> dict[str, np.ndarray]:
    """An SAE folder; returns its weights."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = random_weights(d_in, d_sae, seed, threshold=architecture == "jumprelu")
    make = new_cfg if style == "new" else old_cfg
    cfg = make(d_in, d_sae, architecture, hook, k, normalize, apply_b_dec_to_input, **extra)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file(weights, str(folder / "sae_weights.safetensors"))
    if sparsity:
        rates = np.random.default_rng(seed + 1).uniform(1e-4, 0.5, d_sae)
        save_file({"sparsity": np.log10(rates).astype(np.float32)}, str(folder / "sparsity.safetensors"))
    return weights


def write_index(folder: Path, top_acts: np.ndarray, top_tokens: np.ndarray, top_center: np.ndarray,
                density: np.ndarray, hist: np.ndarray, tokens: int, window: tuple[int, int], model: str) -> None:
    """llmx_index.safetensors as the SAE spec fixes it (sae-train writes it; the explore side reads it)."""
    from safetensors.numpy import save_file

    save_file({"top_acts": top_acts.astype(np.float32), "top_tokens": top_tokens.astype(np.int32),
               "top_center": top_center.astype(np.int32), "density": density.astype(np.float32),
               "hist": hist.astype(np.int64)}, str(Path(folder) / "llmx_index.safetensors"),
              metadata={"tokens": str(tokens), "window_before": str(window[0]), "window_after": str(window[1]),
                        "model": model})
