"""llmx's models inside Simon Willison's `llm`: `llm -m gpt2 "Hullo, my name is"`.

Installed by `pip install 'llmx[llm]'` (the entry point `llm: llmx = llmx.llm_plugin`). `llm models`
then lists, as "llmx: NAME":

1. the models named in LLMX_LLM_MODELS (entries separated by ':' on Unix, ';' on Windows) and,
   one per line, in `llmx-models.txt` in llm's directory (`dirname "$(llm logs path)"`); an entry is
   a Hub id, a model directory or a .gguf file, optionally named as NAME=ENTRY (default name: a
   path's file name without .gguf, a Hub id as it is; the entry itself is an alias);
2. llmx's short names (gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2), downloaded on first use;
3. the GPT-2 and Llama models already complete in the Hugging Face cache, by Hub id.

Each continues the prompt as `llmx continue` does (the same seed gives the same text), streaming.
Options: -o max_tokens N, -o temperature T, -o top_k K, -o top_p P, -o seed S, and -o adapter DIR (a LoRA
adapter from `llmx finetune` or peft, applied to the model as `llmx continue --adapter DIR` does). A system prompt
(-s) is put before the prompt with a blank line between. These are base models, without a chat
template, so conversations (`llm chat`, -c) are refused.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Optional

import llm
from pydantic import Field

MAX_TOKENS, TEMPERATURE = 50, 1.0  # the defaults of `llmx continue`
CONFIG_FILE = "llmx-models.txt"


@dataclass(frozen=True)
class Entry:
    name: str  # the model id in llm
    source: str  # what llmx loads: Hub id, directory or .gguf file
    aliases: tuple[str, ...] = field(default=())


@llm.hookimpl
def register_models(register):
    for entry in model_entries():
        register(LlmxModel(entry.name, entry.source), aliases=entry.aliases)


def model_entries() -> list[Entry]:
    """Configured models, then short names, then the Hugging Face cache; the first of a name wins."""
    from .engine.hub import SHORT_NAMES, cached_models

    entries = [parse_entry(text) for text in configured()]
    entries += [Entry(short, short, (repo,)) for short, repo in SHORT_NAMES.items()]
    entries += [Entry(model.repo_id, model.repo_id) for model in cached_models() if model.loadable]
    seen, unique = set(), []
    for entry in entries:
        names = {entry.name, *entry.aliases}
        if entry.name not in seen:
            unique.append(Entry(entry.name, entry.source, tuple(a for a in entry.aliases if a not in seen)))
        seen |= names
    return unique


def configured() -> list[str]:
    """Entries from LLMX_LLM_MODELS and from llmx-models.txt in llm's directory (# starts a comment)."""
    entries = [e for e in os.environ.get("LLMX_LLM_MODELS", "").split(os.pathsep) if e.strip()]
    path = llm.user_dir() / CONFIG_FILE
    if path.is_file():
        lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
        entries += [line for line in lines if line]
    return [e.strip() for e in entries]


def parse_entry(text: str) -> Entry:
    """NAME=SOURCE, or SOURCE alone: a local path is named by its file name (without .gguf)."""
    name, sep, source = text.partition("=")
    if not sep:
        source = text
        path = Path(text).expanduser()
        name = path.name.removesuffix(".gguf") if path.exists() or text.endswith(".gguf") else text
    return Entry(name.strip(), source.strip(), (source.strip(),) if source.strip() != name.strip() else ())


@lru_cache(maxsize=2)
def load_model(source: str, adapter: str | None = None):
    from .engine import load
    from .engine.threads import blas_threads, use_blas_threads

    threads = blas_threads(os.environ)  # as the command line does: one BLAS thread per idle core, or LLMX_THREADS
    if threads is not None:
        use_blas_threads(threads)
    return load(source, adapter=adapter)


class LlmxModel(llm.Model):
    can_stream = True
    supports_conversation = False  # base models: no chat template to replay a conversation with

    class Options(llm.Options):
        max_tokens: Optional[int] = Field(None, ge=0, description=f"Most tokens to generate (default {MAX_TOKENS})")
        temperature: Optional[float] = Field(
            None, ge=0, description=f"Sampling temperature; 0 picks the most likely token (default {TEMPERATURE})")
        top_k: Optional[int] = Field(None, ge=1, description="Sample only from the k most likely tokens")
        top_p: Optional[float] = Field(
            None, gt=0, le=1, description="Sample only from the most likely tokens whose probabilities add up to p")
        seed: Optional[int] = Field(None, ge=0, lt=2 ** 32, description="Random seed: the same seed gives the same continuation")
        adapter: Optional[str] = Field(
            None, description="A folder with a LoRA adapter (from llmx finetune or peft) to apply to the model")

    def __init__(self, model_id: str, source: str):
        self.model_id = model_id
        self.source = source

    def __str__(self) -> str:
        return f"llmx: {self.model_id}"

    def execute(self, prompt, stream, response, conversation):
        from .engine import Sampling

        lm = load_model(self.source, prompt.options.adapter)
        text = f"{prompt.system}\n\n{prompt.prompt}" if prompt.system else prompt.prompt
        o = prompt.options
        sampling = Sampling(temperature=TEMPERATURE if o.temperature is None else o.temperature,
                            top_k=o.top_k, top_p=o.top_p)
        generation = lm.generate(lm.prompt_ids(text), MAX_TOKENS if o.max_tokens is None else o.max_tokens,
                                 sampling=sampling, seed=o.seed, on_notice=notice)
        for step in generation:
            if step.text:
                yield step.text
        result = generation.result()  # of the run just streamed
        response.set_usage(input=len(result.prompt_ids), output=len(result.ids))
        response.response_json = {"ids": result.ids, "finish_reason": result.finish_reason}


def notice(message: str) -> None:
    print(f"llmx: warning: {message}", file=sys.stderr)
