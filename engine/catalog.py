"""Models this machine can run without downloading anything: Hub models already in the Hugging Face cache."""

from __future__ import annotations

import json
from pathlib import Path

from .hub import OPTIONAL_FILES, TOKENIZER_FILES


def cached_models(cache: Path | None = None) -> list[str]:
    """Hub ids of the models in the Hugging Face cache (HF_HUB_CACHE) whose files llmx can load offline."""
    if cache is None:
        from huggingface_hub import constants

        cache = Path(constants.HF_HUB_CACHE)
    found = []
    for repo in sorted(cache.glob("models--*")):
        snapshot = latest_snapshot(repo)
        if snapshot is not None and is_complete(snapshot):
            found.append(repo.name.removeprefix("models--").replace("--", "/"))
    return found


def latest_snapshot(repo: Path) -> Path | None:
    """The snapshot folder that refs/main names, else the most recently written one."""
    ref = repo / "refs" / "main"
    if ref.is_file() and (repo / "snapshots" / ref.read_text().strip()).is_dir():
        return repo / "snapshots" / ref.read_text().strip()
    snapshots = [p for p in (repo / "snapshots").glob("*") if p.is_dir()]
    return max(snapshots, key=lambda p: p.stat().st_mtime, default=None)


def is_complete(snapshot: Path) -> bool:
    """Whether the snapshot has a supported config, safetensors weights and the tokenizer files."""
    try:
        model_type = json.loads((snapshot / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return False
    if model_type not in TOKENIZER_FILES:
        return False
    weights = (snapshot / "model.safetensors").is_file() or (snapshot / "model.safetensors.index.json").is_file()
    tokenizer = all((snapshot / name).is_file() for name in TOKENIZER_FILES[model_type] if name not in OPTIONAL_FILES)
    return weights and tokenizer
