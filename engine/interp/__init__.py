"""Looking inside the model: the logit lens, attention patterns, head scores, embedding neighbours,
activation steering, a step-by-step account of one prediction, and which components caused it (direct logit
attribution, activation patching, ablation); one module per analysis.

Pure functions over a `LanguageModel` that return data (dataclasses and arrays); nothing here prints.
They use only `Config`, `Weights` and `forward` with hooks (a `Trace` to read, a hook to steer), so they
work the same on GPT-2 (LayerNorm, learned positions) and Llama (RMSNorm, rotary positions, grouped-query
attention). A text longer than the context keeps its last tokens, as everywhere (see `context.py`).

    from llmx.engine.interp import logit_lens
"""

from .ablation import HookedModel, Unit, ablated, ablation_hooks, parse_ablation, with_hooks
from .attention import (Attention, HeadScan, HeadScore, HeadScores, attention, patterns, random_sequences,
                        scan_heads, score_heads)
from .common import (check_head, check_layer, check_length, is_tied, resolve_position, single_token, token_texts,
                     unembed)
from .attribution import Attribution, Component, TokenRef, accumulated, attribute, parse_token
from .explain import BlockStep, Explanation, HeadFocus, TokenStep, explain
from .lens import Lens, layer_names, logit_lens, residual_streams
from .neighbors import Neighbor, Neighbors, neighbors
from .patching import Patching, patch
from .steering import Continuation, Steering, pad_id, steer, steering_hooks, steering_vector, with_start

__all__ = ["HookedModel", "Unit", "ablated", "ablation_hooks", "parse_ablation", "with_hooks", "Attribution",
           "Component", "TokenRef", "accumulated", "attribute", "parse_token", "Patching", "patch",
           "Attention", "HeadScan", "HeadScore", "HeadScores", "attention", "patterns", "random_sequences",
           "scan_heads", "score_heads", "check_head", "check_layer", "check_length", "is_tied", "resolve_position",
           "single_token", "token_texts", "unembed", "BlockStep", "Explanation", "HeadFocus", "TokenStep", "explain",
           "Lens", "layer_names", "logit_lens", "residual_streams", "Neighbor", "Neighbors", "neighbors",
           "Continuation", "Steering", "pad_id", "steer", "steering_hooks", "steering_vector", "with_start"]
