"""Find a model's files: a local directory or .gguf file, or a Hugging Face Hub repo downloaded once.

Downloads go through huggingface_hub, so HF_HOME, HF_HUB_OFFLINE, HF_ENDPOINT and HF_TOKEN
work as everywhere else. A model whose files are all in the cache is loaded without any request.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CheckpointError, ModelNotFoundError

DEFAULT_MODEL = "openai-community/gpt2"
SHORT_NAMES = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
    "distilgpt2": "distilbert/distilgpt2",
}
TOKENIZER_FILES = {"gpt2": ["vocab.json", "merges.txt"], "llama": ["tokenizer.json", "tokenizer_config.json"]}
OPTIONAL_FILES = {"tokenizer_config.json"}


def repo_id(name: str) -> str:
    return SHORT_NAMES.get(name, name)


def locate(name: str) -> Path:
    """A local path for the model `name`: the path itself if it exists, else the Hub snapshot folder."""
    path = Path(name).expanduser()
    if path.exists():
        if path.is_file() and path.suffix != ".gguf":
            raise ModelNotFoundError(f"{name} is a file but not a .gguf file: give a model directory or a .gguf file")
        return path
    if name.endswith(".gguf") or name.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"no such file or directory: {name}")
    return download(repo_id(name))


def download(repo: str) -> Path:
    """The snapshot folder of `repo` with config, weights and tokenizer files, fetching only what is missing."""
    import json

    config = fetch(repo, "config.json")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"config.json of {repo} is not valid JSON: delete {config} and try again") from None
    for filename in TOKENIZER_FILES.get(model_type, TOKENIZER_FILES["gpt2"]):
        fetch(repo, filename, optional=filename in OPTIONAL_FILES)
    weights = fetch(repo, "model.safetensors", optional=True)
    if weights is None:
        index = fetch(repo, "model.safetensors.index.json", optional=True)
        if index is None:
            if fetch(repo, "pytorch_model.bin", optional=True, probe_only=True):
                raise CheckpointError(f"{repo} has only pickle weights (pytorch_model.bin); llmx loads only "
                                      "safetensors, never pickle files: pick a repo with model.safetensors")
            raise CheckpointError(f"{repo} has no model.safetensors: is it a GPT-2 or Llama model repo?")
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            fetch(repo, shard)
    return config.parent


def fetch(repo: str, filename: str, *, optional: bool = False, probe_only: bool = False) -> Path | None:
    """One file of `repo` from the cache if there, else downloaded (with a progress bar on stderr)."""
    from huggingface_hub import file_exists, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HFValidationError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError)

    try:
        cached = try_to_load_from_cache(repo, filename)
    except HFValidationError:
        raise ModelNotFoundError(f"'{repo}' is neither a local path nor a valid Hub model id (owner/name)") from None
    if isinstance(cached, str):
        return Path(cached)
    try:
        if probe_only:
            return Path(filename) if file_exists(repo, filename) else None
        return Path(hf_hub_download(repo, filename))
    except EntryNotFoundError:
        if optional:
            return None
        raise CheckpointError(f"{repo} on the Hub has no {filename}: is it a GPT-2 or Llama model repo?") from None
    except GatedRepoError:
        raise ModelNotFoundError(f"{repo} is gated on the Hub: accept its licence there and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise ModelNotFoundError(f"model '{repo}' was not found on the Hugging Face Hub (nor as a local path); "
                                 f"short names: {', '.join(SHORT_NAMES)}") from None
    except LocalEntryNotFoundError:
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            raise ModelNotFoundError(f"{repo} is not in the cache and HF_HUB_OFFLINE is set: "
                                     "unset it once to download the model") from None
        raise ModelNotFoundError(f"cannot reach the Hugging Face Hub to download {repo}, and it is not cached: "
                                 "check your connection or HF_ENDPOINT") from None
    except OSError as e:  # network failures surface as requests/httpx errors, which are OSErrors
        raise ModelNotFoundError(f"downloading {filename} of {repo} failed: {e}") from None
