"""The unembedding and the cross-entropy together, a chunk of positions at a time.

The logits are the largest array of a training step ([batch * n_seq, n_vocab]: 1024 x 49152 floats, 200 MB, for
SmolLM2 at 4 x 256 tokens), and the softmax, its logarithm and their gradient are as large again. But a position's
loss, and the gradient of the loss with respect to that position's logits, depend on its own logits alone; so the
forward pass computes the logits of CHUNK positions, their loss, and at once their gradient with respect to the
final hidden state (and to the unembedding matrix, when it trains), then forgets them. What the backward pass
needs from the head is then only d_x, [batch, n_seq, n_embd].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import layers as L

CHUNK = 256  # positions per chunk of logits: 256 x 49152 floats is 50 MB


@dataclass
class HeadGrads:
    d_x: np.ndarray  # [batch, n_seq, n_embd]: d loss / d (final norm's output)
    d_unembed: np.ndarray | None  # [n_vocab, n_embd], when the unembedding (or the tied embedding) trains


def head_forward(x: np.ndarray, unembed: np.ndarray, targets, mask, *, grad: bool, grad_unembed: bool):
    """The mean cross-entropy of `targets` over the positions where `mask` is 1, from the final hidden states
    x [batch, n_seq, n_embd] and the unembedding [n_vocab, n_embd]; with grad, also its HeadGrads. (loss, grads)."""
    rows = x.reshape(-1, x.shape[-1])  # [n_tokens, n_embd]
    targets, mask = np.asarray(targets).reshape(-1), np.asarray(mask).reshape(-1)
    count = max(float(mask.sum()), 1.0)  # every chunk divides by the count of the whole batch
    d_rows = np.empty_like(rows) if grad else None
    d_unembed = None
    loss = 0.0
    for lo in range(0, len(rows), CHUNK):
        part = slice(lo, lo + CHUNK)
        logits = rows[part] @ unembed.T  # [chunk, n_embd] -> [chunk, n_vocab]
        chunk_loss, saved = L.cross_entropy_forward(logits, targets[part], mask[part], count)
        loss += chunk_loss
        if grad:
            d_logits = L.cross_entropy_backward(saved)
            d_rows[part] = d_logits @ unembed  # [chunk, n_vocab] -> [chunk, n_embd]
            if grad_unembed:  # the first chunk's product starts the sum: no zeros to add it to
                d_part = d_logits.T @ rows[part]  # [n_vocab, chunk] @ [chunk, n_embd]
                d_unembed = d_part if d_unembed is None else np.add(d_unembed, d_part, out=d_unembed)
    return loss, (HeadGrads(d_rows.reshape(x.shape), d_unembed) if grad else None)
