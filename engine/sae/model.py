"""A sparse autoencoder over one hook point's activations, computed as SAELens computes it.

    acts = sae.encode(x)        # [n, d_in] -> [n, d_sae], mostly zeros
    x_hat = sae.decode(acts)    # [n, d_sae] -> [n, d_in]

Encoding, step by step (SAELens' `process_sae_in` then the architecture's activation):
    1. center: x - mean(x) over d_in, for SAEs trained on TransformerLens models with centred writing weights
    2. normalize (see NORMALIZATIONS), remembering what step 6 needs to undo it
    3. x - b_dec, when apply_b_dec_to_input
    4. pre = x @ W_enc + b_enc
    5. standard: ReLU(pre);  topk: ReLU of the k largest entries of pre, 0 elsewhere;
       jumprelu: ReLU(pre) where pre > threshold, 0 elsewhere
Decoding: acts @ W_dec + b_dec, then the normalization undone (step 2's factors, per row).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ARCHITECTURES = ("standard", "topk", "jumprelu")
NORMALIZATIONS = {
    "none": "activations as they are",
    "expected_average_only_in": "multiplied by a fixed factor (the folder's norm_scaling_factor); none without one",
    "constant_norm_rescale": "each row scaled to norm sqrt(d_in), the reconstruction scaled back",
    "layer_norm": "each row centred and divided by its standard deviation (+1e-5), the reconstruction restored",
}
LAYER_NORM_EPS = 1e-5  # SAELens' run_time_activation_ln_in


@dataclass(frozen=True)
class Rows:
    """What normalizing a batch did to each row, so decoding can undo it: x_norm = (x - shift) * factor."""

    shift: np.ndarray | float  # [n, 1] or 0
    factor: np.ndarray | float  # [n, 1] or a scalar


@dataclass(frozen=True)
class SparseAutoencoder:
    w_enc: np.ndarray = field(repr=False)  # [d_in, d_sae]
    w_dec: np.ndarray = field(repr=False)  # [d_sae, d_in]; row i is latent i's direction
    b_enc: np.ndarray = field(repr=False)  # [d_sae]
    b_dec: np.ndarray = field(repr=False)  # [d_in]
    architecture: str  # "standard" (ReLU) | "topk" | "jumprelu"
    hook: str  # where it reads: a TransformerLens name ("blocks.8.hook_resid_pre") or llmx's ("blocks.8.resid_pre")
    k: int | None = None  # topk: latents kept per row
    threshold: np.ndarray | None = field(default=None, repr=False)  # [d_sae], jumprelu
    apply_b_dec_to_input: bool = True  # subtract b_dec from the input before encoding
    normalize: str = "none"  # a key of NORMALIZATIONS
    scale: float | None = None  # expected_average_only_in's factor, when the folder gives one
    center: bool = False  # remove each row's mean over d_in before encoding (TransformerLens' centred
    # writing weights: its GPT-2 residual stream has mean 0 over d_model, llmx's, like Hugging Face's, does not)

    @property
    def d_in(self) -> int:
        return self.w_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.w_enc.shape[1]

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Latent activations of the rows of x: [n, d_in] -> [n, d_sae]."""
        return self.encode_rows(x)[0]

    def decode(self, acts: np.ndarray, rows: Rows | None = None) -> np.ndarray:
        """The reconstruction [n, d_sae] -> [n, d_in], in the input's scale (`rows`: from encode_rows,
        needed by the per-row normalizations; without it they are undone as for a row of norm sqrt(d_in))."""
        x_hat = acts.astype(np.float32) @ self.w_dec + self.b_dec  # [n, d_in]
        return denormalize(x_hat, rows or self.fixed_rows())

    def encode_rows(self, x: np.ndarray) -> tuple[np.ndarray, Rows]:
        """(activations [n, d_sae], what the normalization did to each row, for `decode`)."""
        x = np.asarray(x, dtype=np.float32)
        if self.center:
            x = x - x.mean(axis=-1, keepdims=True)
        rows = normalization(x, self.normalize, self.scale)
        x = (x - rows.shift) * rows.factor
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        pre = x @ self.w_enc + self.b_enc  # [n, d_in] -> [n, d_sae]
        return activate(pre, self.architecture, self.k, self.threshold), rows

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """decode(encode(x)) with each row's own normalization undone: [n, d_in] -> [n, d_in]."""
        acts, rows = self.encode_rows(x)
        return self.decode(acts, rows)

    def fixed_rows(self) -> Rows:
        """The normalization of a decode without its rows: exact for none and expected_average_only_in."""
        return Rows(0.0, self.scale if self.normalize == "expected_average_only_in" and self.scale else 1.0)


def normalization(x: np.ndarray, mode: str, scale: float | None) -> Rows:
    """SAELens' run_time_activation_norm_fn_in for `mode`, as (shift, factor) per row of x [n, d_in]."""
    if mode == "constant_norm_rescale":
        norms = np.linalg.norm(x, axis=-1, keepdims=True)
        return Rows(0.0, np.float32(np.sqrt(x.shape[-1])) / np.maximum(norms, np.float32(1e-30)))
    if mode == "layer_norm":
        mu = x.mean(axis=-1, keepdims=True)
        std = (x - mu).std(axis=-1, keepdims=True, ddof=1)  # torch's std: the unbiased estimate
        return Rows(mu, 1.0 / (std + np.float32(LAYER_NORM_EPS)))
    if mode == "expected_average_only_in" and scale:
        return Rows(0.0, np.float32(scale))
    return Rows(0.0, 1.0)


def denormalize(x_hat: np.ndarray, rows: Rows) -> np.ndarray:
    """SAELens' run_time_activation_norm_fn_out: the reconstruction back in the input's scale."""
    return (x_hat / rows.factor + rows.shift).astype(np.float32)


def activate(pre: np.ndarray, architecture: str, k: int | None, threshold: np.ndarray | None) -> np.ndarray:
    """Latent activations from pre-activations [n, d_sae]."""
    if architecture == "topk":
        return top_k(pre, k)
    acts = np.maximum(pre, 0)
    if architecture == "jumprelu":
        acts = np.where(pre > threshold, acts, 0).astype(pre.dtype)
    return acts


def top_k(pre: np.ndarray, k: int) -> np.ndarray:
    """ReLU of each row's k largest entries, 0 elsewhere (SAELens' TopK: torch.topk, then ReLU)."""
    k = min(k, pre.shape[-1])
    best = np.argpartition(-pre, k - 1, axis=-1)[:, :k]  # [n, k], in no particular order
    acts = np.zeros_like(pre)
    np.put_along_axis(acts, best, np.maximum(np.take_along_axis(pre, best, axis=-1), 0), axis=-1)
    return acts
