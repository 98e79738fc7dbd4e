"""llmx's inference engine: GPT-2 and Llama in NumPy, with no dependency on click or rich.

    from llmx.engine import load, Trace
    model = load("gpt2")                      # a Hub id, a local directory or a .gguf file
    ids = model.prompt_ids("Hullo, my name is")
    for p in model.predict(ids, top=5): print(p.token, p.prob)
    for step in model.generate(ids, max_tokens=20, seed=1): print(step.text, end="")
    print(model.complete(ids, max_tokens=20, seed=1).text)   # the same text, as a GenerationResult
    trace = Trace(["blocks.*.attn.pattern"]); model.forward(ids, hooks=trace)   # Hooks read or replace
    print(model.score(model.tokenizer.encode("Hullo, my name is")).perplexity)

Names are imported on first use, so that importing the package (for its errors, say) does not
load NumPy: `llmx --help` stays fast.
"""

from importlib import import_module

_HOME = {
    "load": "loader", "load_tokenizer": "loader",
    "LanguageModel": "lm", "Prediction": "lm",
    "Generation": "generate", "GenerationRequest": "generate", "GenerationResult": "generate", "Step": "generate",
    "Hooks": "hooks", "Trace": "hooks", "Site": "hooks",
    "Sampling": "sampling",
    "Score": "score", "TokenScore": "score",
    "ContextPrompt": "prompting", "with_context": "prompting",
    "Config": "model", "Weights": "model", "KVCache": "model", "forward": "model",
    "LlmxError": "errors", "ModelNotFoundError": "errors", "CheckpointError": "errors", "TokenizerError": "errors",
    "InputError": "errors",
}
__all__ = list(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_HOME[name]}", __name__), name)
