"""Find a model's files: a local directory or .gguf file, or a Hugging Face Hub repo downloaded once.

Downloads go through huggingface_hub's own functions, so HF_HOME, HF_HUB_OFFLINE, HF_ENDPOINT and
HF_TOKEN work as everywhere else, and files land in the standard cache
(`$HF_HOME/hub/models--{owner}--{name}/snapshots/{commit}/`). Once a model's files are in the cache it
is loaded from there without a single request: llmx does not ask the Hub whether `main` has moved.
A file that must be downloaded is first asked for once without retries, so an unreachable Hub fails at
once instead of after huggingface_hub's retries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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
PROBE_TIMEOUT = 5  # seconds to wait for the Hub's answer before calling it unreachable
OFFLINE_HINT = ("Offline, llmx loads a local model folder, a .gguf file, or a model already in the cache "
                "(set HF_HUB_OFFLINE=1 to skip the network)")


def repo_id(name: str) -> str:
    return SHORT_NAMES.get(name, name)


def locate(name: str) -> Path:
    """A local path for the model `name`: the path itself if it exists, else the Hub snapshot folder."""
    path = Path(name).expanduser()
    try:
        exists = path.exists()
    except OSError as e:  # a name longer than the file system allows (255 bytes a component), ...
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise ModelNotFoundError(f"{shown} is neither a usable path ({e.strerror}) nor a Hub model id: give a "
                                 "model directory, a .gguf file or an owner/name id") from None
    if exists:
        if path.is_file() and path.suffix != ".gguf":
            raise ModelNotFoundError(f"{name} is a file but not a .gguf file: give a model directory or a .gguf file")
        return path
    if name.endswith(".gguf") or name.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"no such file or directory: {name}")
    return download(repo_id(name))


def download(repo: str) -> Path:
    """The snapshot folder of `repo` with config, weights and tokenizer files, fetching only what is missing.

    config.json decides the commit; every other file is taken from that same commit, so a repo that
    changes between two runs never leaves a snapshot with files from two versions. It also names the
    architecture, which is checked before any weight is fetched; the architecture's module names the
    tokenizer files. (A snapshot's files are links into blobs/: a damaged file is fixed by deleting the
    blob, hence the `resolve()`s below.)
    """
    from .arch import for_model_type

    config = fetch(repo, "config.json")
    commit = config.parent.name  # snapshots/{commit}/config.json
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise CheckpointError(f"config.json of {repo} is not a JSON object: delete {config.resolve()} and try again") \
            from None
    arch = for_model_type(model_type, f"config.json of {repo}")
    fetch_weights(repo, commit)
    for filename in arch.TOKENIZER_FILES:
        fetch(repo, filename, commit)
    for filename in arch.OPTIONAL_TOKENIZER_FILES:
        fetch(repo, filename, commit, optional=True)
    return config.parent


def fetch_weights(repo: str, commit: str) -> None:
    """model.safetensors, or the shards its index names; never pickle weights."""
    if fetch(repo, "model.safetensors", commit, optional=True):
        return
    index = fetch(repo, "model.safetensors.index.json", commit, optional=True)
    if index is None:
        if has_pickle_weights(repo, commit):
            raise CheckpointError(f"{repo} has only pickle weights (pytorch_model.bin); llmx loads only "
                                  "safetensors, never pickle files: pick a repo with model.safetensors")
        raise CheckpointError(f"{repo} has no model.safetensors: is it a {titles()} model repo?")
    try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        raise CheckpointError(f"{index} has no valid weight_map: delete {index.resolve()} and try again") from None
    for shard in shards:
        fetch(repo, shard, commit)


def fetch(repo: str, filename: str, revision: str | None = None, *, optional: bool = False) -> Path | None:
    """One file of `repo` from the cache if there (no request), else downloaded with a progress bar on stderr.

    Returns None for an `optional` file the repo does not have (huggingface_hub caches that fact too).
    """
    from httpx2 import HTTPError as NetworkError  # huggingface_hub's HTTP client; its errors are not OSErrors
    from huggingface_hub import _CACHED_NO_EXIST, constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, HFValidationError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError)

    try:
        cached = try_to_load_from_cache(repo, filename, revision=revision)
    except HFValidationError:
        raise ModelNotFoundError(f"'{repo}' is neither a local path nor a valid Hub model id (owner/name)") from None
    if isinstance(cached, str):
        return Path(cached)
    if cached is _CACHED_NO_EXIST:
        return missing(repo, filename, optional)
    if not constants.is_offline_mode():
        probe(repo, filename, revision)
    try:
        return Path(hf_hub_download(repo, filename, revision=revision))
    except LocalEntryNotFoundError:  # not cached, and the Hub could not be asked: check this before its base class
        if constants.is_offline_mode():
            raise ModelNotFoundError(f"{repo} is not in the cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE "
                                     "is set: unset it once to download the model") from None
        raise unreachable(repo, "no answer") from None
    except EntryNotFoundError:  # a 404 with X-Error-Code: EntryNotFound
        return missing(repo, filename, optional)
    except GatedRepoError:
        raise ModelNotFoundError(f"{repo} is gated on the Hub: accept its licence there and set HF_TOKEN") from None
    except RepositoryNotFoundError:  # a 404 (or 401) with X-Error-Code: RepoNotFound
        raise ModelNotFoundError(f"model '{repo}' was not found on the Hugging Face Hub (nor as a local path); "
                                 f"short names: {', '.join(SHORT_NAMES)}") from None
    except (OSError, NetworkError) as e:  # HfHubHTTPError is an OSError; a cut connection is a NetworkError
        if isinstance(e, HfHubHTTPError) and e.response.status_code == 401:
            raise ModelNotFoundError(f"the Hub refused the token sent for {repo}: check HF_TOKEN") from None
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelNotFoundError(f"downloading {filename} of {repo} failed ({reason}): try again") from None


def probe(repo: str, filename: str, revision: str | None) -> None:
    """Ask the Hub for the file once (a HEAD request, no retries) and raise if the Hub cannot be reached.

    huggingface_hub retries a failed connection five times, 1, 2, 4, 8 and 8 s apart, with no setting to
    change that: 23 s before an offline user learns anything. An answer of any status (404, 401, ...)
    means the Hub is reachable, and hf_hub_download then asks again and reports it.
    """
    from httpx2 import TransportError  # connection refused, DNS failure, timeout, proxy error
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers, get_session

    try:
        get_session().head(hf_hub_url(repo, filename, revision=revision), headers=build_hf_headers(),
                           timeout=PROBE_TIMEOUT, follow_redirects=False)
    except TransportError as e:
        raise unreachable(repo, (str(e).strip().splitlines() or [type(e).__name__])[0]) from None


def unreachable(repo: str, reason: str) -> ModelNotFoundError:
    from huggingface_hub import constants

    return ModelNotFoundError(f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} ({reason}), and {repo} "
                              f"is not in the cache ({constants.HF_HUB_CACHE}): check your connection or "
                              f"HF_ENDPOINT. {OFFLINE_HINT}")


def missing(repo: str, filename: str, optional: bool) -> None:
    if optional:
        return None
    raise CheckpointError(f"{repo} on the Hub has no {filename}: is it a {titles()} model repo?")


def titles() -> str:
    """The architectures llmx runs, for messages: "GPT-2, Llama or Qwen2"."""
    from .arch import titles

    return titles()


def has_pickle_weights(repo: str, revision: str) -> bool:
    """Whether the repo has pytorch_model.bin (one HEAD request; False when that cannot be known)."""
    from huggingface_hub import file_exists

    try:
        return file_exists(repo, "pytorch_model.bin", revision=revision)
    except Exception:  # offline, unreachable, refused: the caller's message stays true without this detail
        return False


@dataclass(frozen=True)
class CachedModel:
    """A model repo in the Hugging Face cache."""

    repo_id: str  # "openai-community/gpt2"
    size_on_disk: int  # bytes, all cached revisions together
    snapshot: Path  # the folder `main` points to (else the newest snapshot)
    last_modified: float  # seconds since the epoch, when a file of it last changed

    @property
    def loadable(self) -> bool:
        """Whether the snapshot has a supported config, safetensors weights and tokenizer files (no download)."""
        try:
            model_type = json.loads((self.snapshot / "config.json").read_text()).get("model_type")
        except (OSError, ValueError, AttributeError, RecursionError):
            return False
        from .arch import find_model_type

        arch = find_model_type(model_type)
        if arch is None:
            return False
        weights = any((self.snapshot / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json"))
        return weights and all((self.snapshot / name).is_file() for name in arch.TOKENIZER_FILES)


def cached_models(cache_dir: str | Path | None = None) -> list[CachedModel]:
    """The model repos in the HF cache (default: $HF_HOME/hub), sorted by id; [] when there is no cache yet,
    or none that can be read (a file where the folder should be, a name too long). Damaged repos inside
    it (dangling links, a file where a folder should be) are left out by huggingface_hub's scan."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache_dir)
    except (CacheNotFound, OSError, ValueError):  # none yet; a name too long; a file where the folder should be
        return []
    models = []
    for repo in info.repos:
        if repo.repo_type != "model" or not repo.revisions:
            continue
        snapshot = max(repo.revisions, key=lambda rev: ("main" in rev.refs, rev.last_modified)).snapshot_path
        models.append(CachedModel(repo.repo_id, repo.size_on_disk, snapshot, repo.last_modified))
    return sorted(models, key=lambda model: model.repo_id)
