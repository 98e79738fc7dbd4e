"""Float64 references for the parity tests: llmx's own engine and transformers' model on the same weights,
both computing in float64 throughout.

Why: float32 results differ from the exact ones by rounding, and how much depends on the order in which
the BLAS accumulates its sums, which depends on the CPU (OpenBLAS and MKL pick different kernels for AVX2
and AVX-512). Comparing float32 llmx with float32 transformers therefore mixes two implementations' rounding
and fails on some CPUs. Instead the tests check two things that hold on any CPU:
1. llmx in float64 equals transformers in float64 to float64 rounding: the same math, independently written;
2. llmx in float32 is within a float32-rounding bound of llmx in float64.
"""

from __future__ import annotations

import dataclasses
import types

import numpy as np

from llmx.engine.lm import LanguageModel
from llmx.engine.model import astype

# How far float32 logits of the tests' tiny random models (conftest: 2 blocks, 64 wide, logits below ~1.5)
# may be from the exact ones. Each logit is about ten float32 operations deep, each a sum of at most 256
# products rounded with relative error at most ~sqrt(256) * 2**-24 ~ 1e-6, on values of order one: ~1e-5.
# Measured on an AVX-512 EPYC: 4e-7 for llmx and for transformers alike.
TINY_FLOAT32_TOLERANCE = 1e-5


def llmx_float64(model: LanguageModel) -> LanguageModel:
    """The same model with every weight cast to float64: `forward` then computes in float64."""
    return dataclasses.replace(model, weights=astype(model.weights, np.float64))


def transformers_float64(model):
    """A float64 copy of a transformers causal LM, from its state dict (a GGUF file's dequantized tensors).

    Llama's RMSNorm and rotary embedding cast to float32 on purpose (`hidden_states.to(torch.float32)`,
    `position_ids.float()`), so for a float64 reference those two are replaced by the same formulas in float64.
    """
    import torch

    reference = type(model)(model.config).to(torch.float64).eval()
    reference.load_state_dict({name: t.to(torch.float64) for name, t in model.state_dict().items()}, strict=True)
    for module in reference.modules():
        kind = type(module).__name__
        if kind == "Gemma3TextScaledWordEmbedding":  # its scale is a float32 buffer: sqrt(n_embd) in float64
            module.embed_scale = torch.tensor(module.scalar_embed_scale, dtype=torch.float64)
        elif kind == "Gemma3RMSNorm":  # x / rms * (1 + w), computed in float32 by Gemma's own
            module.forward = types.MethodType(_gemma_rms_norm_float64, module)
        elif kind == "Gemma3RotaryEmbedding":
            module.forward = types.MethodType(_gemma_rotary_float64, module)
        elif kind.endswith("RMSNorm"):
            module.forward = types.MethodType(_rms_norm_float64, module)
        elif kind.endswith("RotaryEmbedding"):
            if module.rope_type != "default":
                raise ValueError(f"no float64 rotary embedding for rope_type {module.rope_type!r}")
            module.forward = types.MethodType(_rotary_float64, module)
    return reference


def _rms_norm_float64(self, x):
    import torch

    return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))


def _gemma_rms_norm_float64(self, x):
    import torch

    return (1.0 + self.weight) * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def _gemma_rotary_float64(self, x, position_ids, layer_type):
    """Gemma 3's rotary tables, one RoPE base per layer type (local and global layers)."""
    import torch

    if self.rope_type[layer_type] != "default":
        raise ValueError(f"no float64 rotary embedding for rope_type {self.rope_type[layer_type]!r}")
    d_head, theta = self.config.head_dim, self.config.rope_parameters[layer_type]["rope_theta"]
    inv_freq = 1.0 / theta ** (torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)
    angles = position_ids[..., None].to(torch.float64) * inv_freq
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(x.dtype), angles.sin().to(x.dtype)


def _rotary_float64(self, x, position_ids):
    import torch

    config = self.config
    d_head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    theta = config.rope_parameters["rope_theta"]
    inv_freq = 1.0 / theta ** (torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)  # [d_head/2]
    angles = position_ids[..., None].to(torch.float64) * inv_freq  # [batch, n_seq, d_head/2]
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(x.dtype), angles.sin().to(x.dtype)


def logits(model, ids) -> np.ndarray:
    """transformers' logits for one sequence: [n_seq, n_vocab], in the model's dtype."""
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def float64_tolerance(float32_tolerance: float) -> float:
    """The bound for float64 against float64, from a float32 rounding bound: rounding errors are the unit
    roundoff times the same amplification by the model, and float64's unit roundoff is 2**-29 of float32's."""
    return float32_tolerance * float(np.finfo(np.float64).eps / np.finfo(np.float32).eps)


def assert_parity(model: LanguageModel, reference, ids: list[int],
                  float32_tolerance: float = TINY_FLOAT32_TOLERANCE) -> None:
    """llmx in float64 equals transformers in float64 up to float64 rounding, and llmx in float32 equals its
    float64 self up to float32 rounding (`float32_tolerance`, argued where it is chosen)."""
    exact, _ = llmx_float64(model).forward(ids, all_logits=True)
    expected = logits(transformers_float64(reference), ids)
    assert exact.dtype == np.float64
    assert np.abs(exact - expected).max() < float64_tolerance(float32_tolerance)
    ours, _ = model.forward(ids, all_logits=True)
    assert np.abs(ours - exact).max() < float32_tolerance
