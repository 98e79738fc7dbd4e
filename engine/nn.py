"""The numerical building blocks of a transformer, as small pure NumPy functions.

They compute in the dtype they are given: float32 for inference, float64 for the reference the
parity tests compare float32 against (constants are cast to the input's dtype, never fixed to float32)."""

import numpy as np


# NumPy's float32 2**x takes half the time of its e**x (0.21 against 0.45 ns a number here), and e**x = 2**(x * LOG2E):
# where a constant multiplies x anyway, folding LOG2E into it makes the exponential half as dear for free.
LOG2E = 1.4426950408889634

FEW_ROWS = 64  # up to this many rows, x @ w.T is faster computed as (w @ x.T).T


def times_transposed(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w.T: [n_seq, in] @ [out, in].T -> [n_seq, out].

    For 2 to FEW_ROWS rows (drafted tokens being checked, a short chunk) and a row-major w it is computed as
    (w @ x.T).T, made contiguous: the same products, which OpenBLAS runs 1.1-1.4x faster on SmolLM2's matrices
    (the weights are the left operand). Past 128 rows that order is slower, and for one row both are the same.
    A column-major w (a tied embedding, packed.column_major) is best as x @ w.T at every row count: GPT-2's
    unembedding of 9 rows took 13 ms so, 23 ms the other way (and 21 ms held row-major).
    """
    if 1 < len(x) <= FEW_ROWS and w.flags.c_contiguous:
        return np.ascontiguousarray((w @ x.T).T)
    return x @ w.T


def linear(x: np.ndarray, p) -> np.ndarray:
    """x @ w.T + b for a layer p with p.w [out, in] and p.b [out] or None: [n_seq, in] -> [n_seq, out]."""
    y = times_transposed(x, p.w)
    if p.b is not None:
        y += p.b
    return y


def by_feature(x: np.ndarray, p, out: np.ndarray | None = None) -> np.ndarray:
    """linear's output kept by feature, (x @ w.T + b).T = w @ x.T + b: [n_seq, in] -> [out, n_seq] (into `out`
    if given, a C-contiguous [out, n_seq] array).

    An MLP of several positions keeps its hidden layer so (model.mlp): OpenBLAS runs the product with the weights
    on the left faster, and the activation then reads the gate's and the up projection's features as contiguous
    rows. SmolLM2's 30 MLPs, 2 threads: 137.5 against 163.7 ms at 128 rows, 523 against 580 at 512.
    """
    y = np.matmul(p.w, x.T, out=out)
    if p.b is not None:
        y += p.b[:, None]
    return y


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """exp(x) normalised along `axis`; the max is subtracted first so large logits do not overflow."""
    e = x - x.max(axis=axis, keepdims=True)
    np.exp(e, out=e)  # in place, like the division: attention patterns are the largest arrays in a pass
    e /= e.sum(axis=axis, keepdims=True)
    return e


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """log(softmax(x)), computed without forming the tiny probabilities first."""
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    """GPT-2's LayerNorm: each row to mean 0 and variance 1, then scaled by g and shifted by b."""
    n = x.dtype.type(x.shape[-1])  # sums over n rather than np.mean: fewer calls, same result
    centered = x - x.sum(axis=-1, keepdims=True) / n
    variance = (centered * centered).sum(axis=-1, keepdims=True) / n
    centered /= np.sqrt(variance + eps)
    centered *= g
    centered += b
    return centered


def rms_norm(x: np.ndarray, g: np.ndarray, eps: float) -> np.ndarray:
    """Llama's RMSNorm: each row divided by its root mean square (no centring), then scaled by g."""
    mean_square = (x * x).sum(axis=-1, keepdims=True) / x.dtype.type(x.shape[-1])
    y = x / np.sqrt(mean_square + eps)
    y *= g  # in place: a temporary fewer, as in layer_norm
    return y


def gelu_new(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """GPT-2's GELU, the tanh approximation ("gelu_new" in Hugging Face's configs).

    0.5 * x * (1 + tanh(u)) with u = sqrt(2/pi) * (x + 0.044715 x^3) equals x * sigmoid(2u),
    computed here as x / (1 + 2**(-2u * LOG2E)): NumPy's float32 2**x is faster than its exp and tanh.
    `out` (x itself, say) takes the result, as in NumPy's functions.
    """
    c = x.dtype.type  # the constants in x's dtype: float32 stays float32, float64 stays exact
    z = x * x
    z *= c(0.044715)
    z += c(1.0)
    z *= x  # x + 0.044715 x^3
    z *= c(-2 * 0.7978845608028654 * LOG2E)  # -2u, in powers of 2
    with np.errstate(over="ignore"):  # 2**z overflowing to inf gives x / inf = 0, GELU's limit
        np.exp2(z, out=z)
    z += c(1.0)
    return np.divide(x, z, out=out)


def silu(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """x * sigmoid(x), the gate of Llama's SwiGLU MLP: x / (1 + 2**(-x * LOG2E)); `out` as in gelu_new."""
    e = x * x.dtype.type(-LOG2E)
    with np.errstate(over="ignore"):  # 2**e overflowing to inf gives x / inf = 0, the limit
        np.exp2(e, out=e)
    e += x.dtype.type(1.0)
    return np.divide(x, e, out=out)


GATE = {"swiglu": silu, "geglu": gelu_new}  # a gated MLP's activation of its gate, by Config.mlp


def rope_tables(positions: np.ndarray, d_head: int, theta: float,
                dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of the rotary angles for these positions: each [n_seq, d_head], computed in float64."""
    inv_freq = 1.0 / theta ** (np.arange(0, d_head, 2, dtype=np.float64) / d_head)  # [d_head/2]
    angles = np.outer(positions, inv_freq)  # [n_seq, d_head/2]
    angles = np.concatenate([angles, angles], axis=-1)  # [n_seq, d_head], the halves share angles
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate pairs (x[i], x[i + d_head/2]) by each position's angle (Hugging Face's "rotate half" layout):
    x * cos + rotate_half(x) * sin, where rotate_half(x) = [-x[half:], x[:half]].

    x: [n_heads, n_seq, d_head] (often a view of a projection's columns); cos, sin: [n_seq, d_head]. The result is
    a new array laid out [n_heads, n_seq, d_head], so that attention can take a key head's queries as rows of one
    matrix without a copy; each half is updated in place rather than rotate_half's concatenation built: the same
    numbers (x1 cos - x2 sin is x1 cos + (-x2) sin exactly) in fewer passes.
    """
    half = x.shape[-1] // 2
    out = np.multiply(x, cos, order="C")
    out[..., :half] -= x[..., half:] * sin[..., :half]
    out[..., half:] += x[..., :half] * sin[..., half:]
    return out
