"""llmx's inference engine: GPT-2 and Llama in NumPy, with no dependency on click or rich.

    from llmx.engine import load
    model = load("gpt2")                      # a Hub id, a local directory or a .gguf file
    ids = model.prompt_ids("Hullo, my name is")
    for p in model.predict(ids, top=5): print(p.token, p.prob)
    for step in model.generate(ids, max_tokens=20, seed=1): print(step.text, end="")
    print(model.score(model.tokenizer.encode("Hullo, my name is")).perplexity)
"""

from .errors import CheckpointError, InputError, LlmxError, ModelNotFoundError, TokenizerError
from .generate import Generation, Step
from .lm import LanguageModel, Prediction
from .loader import load
from .model import Config, KVCache, Steer, Trace, Weights, forward
from .prompting import ContextPrompt, with_context
from .sampling import Sampling
from .score import Score, TokenScore

__all__ = ["load", "LanguageModel", "Prediction", "Generation", "Step", "Sampling", "Config", "Weights",
           "KVCache", "Trace", "Steer", "forward", "LlmxError", "ModelNotFoundError", "CheckpointError",
           "TokenizerError", "InputError", "Score", "TokenScore", "with_context", "ContextPrompt"]
