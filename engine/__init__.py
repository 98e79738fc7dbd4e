"""llmx's inference engine: GPT-2 and Llama in NumPy, with no dependency on click or rich.

    from llmx.engine import load
    model = load("gpt2")                      # a Hub id, a local directory or a .gguf file
    ids = model.prompt_ids("Hullo, my name is")
    for p in model.predict(ids, top=5): print(p.token, p.prob)
    for step in model.generate(ids, max_tokens=20, seed=1): print(step.text, end="")
"""

from .errors import CheckpointError, InputError, LlmxError, ModelNotFoundError, TokenizerError
from .generate import Generation, Step
from .lm import LanguageModel, Prediction
from .loader import load
from .model import Config, KVCache, Steer, Trace, Weights, forward
from .sampling import Sampling

__all__ = ["load", "LanguageModel", "Prediction", "Generation", "Step", "Sampling", "Config", "Weights",
           "KVCache", "Trace", "Steer", "forward", "LlmxError", "ModelNotFoundError", "CheckpointError",
           "TokenizerError", "InputError"]
