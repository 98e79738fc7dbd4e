"""llmx: see what a language model does with your text, from the command line.

The command line lives here (`llmx.main`); the NumPy engine it drives is `llmx.engine`; every view of
the command line, for notebooks, is `llmx.show` (`llmx.show.lens("gpt2", "The capital of France is")`).
"""

from importlib import import_module


def __getattr__(name: str):
    if name == "show":  # loaded on first use, so that the command line does not import it
        return import_module(".show", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
