"""Looking inside the model: the logit lens, attention patterns, head scores, embedding neighbours,
activation steering and a step-by-step account of one prediction; one module per analysis.

Pure functions over a `LanguageModel` that return data (dataclasses and arrays); nothing here prints.
They use only `Config`, `Weights` and `forward` with hooks (a `Trace` to read, a hook to steer), so they
work the same on GPT-2 (LayerNorm, learned positions) and Llama (RMSNorm, rotary positions, grouped-query
attention). A text longer than the context keeps its last tokens, as everywhere (see `context.py`).

    from llmx.engine.interp import logit_lens
"""

from .attention import (Attention, HeadScan, HeadScore, HeadScores, attention, patterns, random_sequences,
                        scan_heads, score_heads)
from .common import (check_head, check_layer, check_length, is_tied, resolve_position, single_token, token_texts,
                     unembed)
from .explain import BlockStep, Explanation, HeadFocus, TokenStep, explain
from .lens import Lens, layer_names, logit_lens, residual_streams
from .neighbors import Neighbor, Neighbors, neighbors
from .steering import Continuation, Steering, pad_id, steer, steering_hooks, steering_vector, with_start

__all__ = ["Attention", "HeadScan", "HeadScore", "HeadScores", "attention", "patterns", "random_sequences",
           "scan_heads", "score_heads", "check_head", "check_layer", "check_length", "is_tied", "resolve_position",
           "single_token", "token_texts", "unembed", "BlockStep", "Explanation", "HeadFocus", "TokenStep", "explain",
           "Lens", "layer_names", "logit_lens", "residual_streams", "Neighbor", "Neighbors", "neighbors",
           "Continuation", "Steering", "pad_id", "steer", "steering_hooks", "steering_vector", "with_start"]
