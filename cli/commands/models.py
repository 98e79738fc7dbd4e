"""`llmx models` (the models in the Hugging Face cache, the short names) and `llmx models show MODEL`."""

from __future__ import annotations

import click

from ..data import models_data
from ..options import ADAPTER, adapter_option, json_option, resolve_model, svg_option
from .common import output


@click.group(invoke_without_command=True, epilog="""\b
Examples:
  llmx models                      # cached models and the short names
  llmx models --json | jq -r '.cached[].id'
  llmx models show gpt2            # architecture, size, quantization, context
  llmx -m gpt2 models show         # the model of -m or LLMX_MODEL
  llmx models show ./SmolLM2-135M-Instruct.Q4_1.gguf
""")
@svg_option
@json_option
@click.pass_context
def models(ctx, svg, as_json):
    """List the models in the Hugging Face cache (with their size on disk) and the short names llmx knows."""
    if ctx.invoked_subcommand is not None:
        return
    from ..engine.hub import SHORT_NAMES, cached_models
    from ..views.models import models_view

    output(None, models_data(cached_models(), SHORT_NAMES), models_view, as_json, svg, "llmx models")


@models.command("show", epilog="""\b
Examples:
  llmx models show gpt2
  llmx models show ./SmolLM2-135M-Instruct.Q4_1.gguf --json
  llmx models show gpt2 --svg gpt2.svg
  llmx finetune -m gpt2 --data essay.txt --ctx 16 --steps 2 --out e && llmx models show gpt2 --adapter e
""")
@click.argument("model", required=False)
@adapter_option
@svg_option
@json_option
@click.pass_context
def models_show(ctx, model, svg, as_json):
    """Describe MODEL (a Hub id, directory or .gguf file): architecture, parameters, quantization, context.

    Without MODEL: the model of `llmx -m MODEL models show`, else LLMX_MODEL, else the default. With --adapter:
    also the LoRA adapter's base model, rank, alpha, target modules and parameters, as its files say.
    """
    from ..engine.describe import describe, describe_adapter
    from ..engine.hub import locate
    from ..views.models import description_view

    model = resolve_model(ctx, None, model)
    adapter = ctx.meta.get(ADAPTER)
    info = {"model": model, **describe(locate(model)), **(describe_adapter(adapter) if adapter else {})}
    output(None, info, description_view, as_json, svg, f"llmx models show {model}")


COMMANDS = [models]
