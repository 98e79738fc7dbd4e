"""Write a trained SAE as a SAELens (>= 6) folder: cfg.json, sae_weights.safetensors, sparsity.safetensors.

The weights read raw residuals: the normalisation used in training is folded into them (train/fit.py's
`fold`), so cfg.json says normalize_activations "none". llmx's own extras (the training settings and the
metrics) sit under metadata.llmx, which SAELens keeps as it is.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

SAELENS_FORMAT = "6.0.0"  # the format version the files follow: SAELens converts configs without one as pre-6 ones
SAFETENSORS_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.int32): "I32", np.dtype(np.int64): "I64"}


def write_tensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """A safetensors file of float32, int32 and int64 tensors (row-major), written then renamed into place."""
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, array in tensors.items():
        size = array.size * array.dtype.itemsize
        header[name] = {"dtype": SAFETENSORS_DTYPES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        for array in tensors.values():
            f.write(np.ascontiguousarray(array).tobytes())
    os.replace(partial, path)


def sae_config(d_in: int, d_sae: int, k: int, hook_name: str, model: str, llmx: dict, prepend_bos: bool) -> dict:
    """cfg.json of a TopK SAE in SAELens 6's fields; prepend_bos: whether its windows began with the model's
    start token."""
    return {"architecture": "topk", "d_in": d_in, "d_sae": d_sae, "k": k, "dtype": "float32", "device": "cpu",
            "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
            "rescale_acts_by_decoder_norm": False, "hook_name": hook_name,
            "metadata": {"model_name": model, "hook_name": hook_name, "hook_layer": int(hook_name.split(".")[1]),
                         "sae_lens_version": SAELENS_FORMAT, "prepend_bos": prepend_bos, "llmx": llmx}}


def write_sae(folder: Path, params, k: int, hook_name: str, model: str, density: np.ndarray, llmx: dict,
              prepend_bos: bool = False) -> None:
    """The SAELens folder for the (folded) parameters `params` (w_enc [d, m], b_enc, w_dec [m, d], b_dec)."""
    folder.mkdir(parents=True, exist_ok=True)
    d_in, d_sae = params.w_enc.shape
    write_tensors(folder / "sae_weights.safetensors", {
        "W_enc": params.w_enc.astype(np.float32), "W_dec": params.w_dec.astype(np.float32),
        "b_enc": params.b_enc.astype(np.float32), "b_dec": params.b_dec.astype(np.float32)}, {"format": "pt"})
    sparsity = np.log10(density.astype(np.float64) + 1e-10).astype(np.float32)  # SAELens' convention
    write_tensors(folder / "sparsity.safetensors", {"sparsity": sparsity}, {"format": "pt"})
    config = sae_config(d_in, d_sae, k, hook_name, model, llmx, prepend_bos)
    (folder / "cfg.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
