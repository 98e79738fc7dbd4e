"""llmx: see what a language model does with your text, from the command line.

The command line lives here (`llmx.main`); the NumPy engine it drives is `llmx.engine`.
"""
