"""Hub downloads against a local stand-in for the Hub (tests/hub_server.py), and local checkpoint errors.

huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE when it is imported, so each load from
the "Hub" runs in a fresh `python` with those variables set, as a user's `llmx` run would.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from llmx.engine import CheckpointError, load
from llmx.engine.hub import SHORT_NAMES, cached_models

GPT2_FILES = ["config.json", "merges.txt", "model.safetensors", "vocab.json"]
LOAD = """
import sys
from llmx.engine import LlmxError, load
try:
    model = load(sys.argv[1])
except LlmxError as e:
    sys.exit(f"{type(e).__name__}: {e}")
print(model.path)
"""
# Replaces time.sleep, so that huggingface_hub's retry waits (1, 2, 4, 8, 8 s) cost nothing and are listed on
# stdout at exit: a test can then check that a failure came without retries, with no timing in the test.
RECORD_SLEEPS = """
import atexit, time
SLEPT = []
time.sleep = SLEPT.append
atexit.register(lambda: print("slept:", SLEPT))
"""


class Run(NamedTuple):
    status: int
    out: str  # stdout: the snapshot path on success
    err: str  # stderr: progress bars, then the error message on its last line
    message: str  # the last line of stderr


def run_load(name: str, hf_home: Path, endpoint: str, *, record_sleeps: bool = False, **env) -> Run:
    """`load(name)` in a fresh interpreter with the given Hub settings.

    A download's progress bar goes to stderr; TQDM_POSITION=-1 shows it even though stderr is no terminal.
    """
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_")) and "proxy" not in k.lower()}
    clean.update(HF_HOME=str(hf_home), HF_ENDPOINT=endpoint, NO_PROXY="127.0.0.1", **env)
    script = (RECORD_SLEEPS if record_sleeps else "") + LOAD
    done = subprocess.run([sys.executable, "-c", script, name], env=clean, capture_output=True, text=True,
                          timeout=60)
    lines = done.stderr.replace("\r", "\n").strip().splitlines()
    return Run(done.returncode, done.stdout.strip(), done.stderr, lines[-1] if lines else "")


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there once the socket is closed


def test_first_load_downloads_only_the_needed_files_into_the_hf_cache(hub_server, tmp_path):
    status, out, err, message = run_load("gpt2", tmp_path / "hf", hub_server.url,
                                         HF_TOKEN="hf_secret", TQDM_POSITION="-1")
    assert status == 0, err
    assert all(f"{name}: 100%" in err for name in GPT2_FILES)  # progress bars on stderr
    snapshot = tmp_path / "hf" / "hub" / "models--openai-community--gpt2" / "snapshots" / hub_server.commit(
        "openai-community/gpt2")
    assert Path(out) == snapshot
    assert sorted(p.name for p in snapshot.iterdir()) == GPT2_FILES
    assert sorted(hub_server.files_got()) == GPT2_FILES  # each once; never pytorch_model.bin or the rest
    assert all(line.split()[1].startswith(("/openai-community/gpt2/", "/api/")) for line in hub_server.requests)
    assert hub_server.authorizations == {"Bearer hf_secret"}


def test_a_second_load_makes_no_request(hub_server, tmp_path):
    assert run_load("openai-community/gpt2", tmp_path / "hf", hub_server.url)[0] == 0
    hub_server.requests.clear()
    status, out, err, message = run_load("openai-community/gpt2", tmp_path / "hf", hub_server.url)
    assert status == 0, err
    assert hub_server.requests == []


def test_offline_loads_from_the_cache(hub_server, tmp_path):
    assert run_load("gpt2", tmp_path / "hf", hub_server.url)[0] == 0
    status, out, err, message = run_load("gpt2", tmp_path / "hf", closed_port_url(), HF_HUB_OFFLINE="1")
    assert status == 0, err
    assert Path(out).parent.parent.name == "models--openai-community--gpt2"


def test_offline_with_nothing_cached_says_so(hub_server, tmp_path):
    status, out, err, message = run_load("gpt2", tmp_path / "hf", hub_server.url, HF_HUB_OFFLINE="1")
    assert status == 1, err
    assert message.startswith("ModelNotFoundError: openai-community/gpt2 is not in the cache")
    assert "HF_HUB_OFFLINE" in message
    assert hub_server.requests == []


def test_an_unknown_repo_names_the_model_and_the_short_names(hub_server, tmp_path):
    status, out, err, message = run_load("nobody/no-such-model", tmp_path / "hf", hub_server.url)
    assert status == 1, err
    assert message == ("ModelNotFoundError: model 'nobody/no-such-model' was not found on the Hugging Face Hub "
                   f"(nor as a local path); short names: {', '.join(SHORT_NAMES)}")


def test_a_pickle_only_repo_is_refused_without_downloading_the_pickle(hub_server, tmp_path):
    status, out, err, message = run_load("someone/pickle-only", tmp_path / "hf", hub_server.url)
    assert status == 1, err
    assert message.startswith("CheckpointError: someone/pickle-only has only pickle weights (pytorch_model.bin)")
    assert "llmx loads only safetensors" in message
    assert hub_server.files_got() == ["config.json"]


def test_an_unreachable_hub_fails_at_once_and_says_what_works_offline(tmp_path):
    endpoint = closed_port_url()
    status, out, err, message = run_load("gpt2", tmp_path / "hf", endpoint, record_sleeps=True)
    assert status == 1, err
    reason = "Connection refused"  # after an errno whose number depends on the system
    assert message.startswith(f"ModelNotFoundError: cannot reach the Hugging Face Hub at {endpoint} (")
    assert message.endswith(f"{reason}), and openai-community/gpt2 is not in the cache ({tmp_path / 'hf' / 'hub'}): "
                            "check your connection or HF_ENDPOINT. Offline, llmx loads a local model folder, a .gguf "
                            "file, or a model already in the cache (set HF_HUB_OFFLINE=1 to skip the network)")
    assert out == "slept: []"  # no retry waits: huggingface_hub alone would wait 23 s before giving up


def test_an_unreachable_hub_with_the_model_cached_loads_it(hub_server, tmp_path):
    assert run_load("gpt2", tmp_path / "hf", hub_server.url)[0] == 0
    status, out, err, message = run_load("gpt2", tmp_path / "hf", closed_port_url(), record_sleeps=True)
    assert status == 0, err
    assert out.splitlines() == [str(tmp_path / "hf" / "hub" / "models--openai-community--gpt2" / "snapshots" /
                                    hub_server.commit("openai-community/gpt2")), "slept: []"]


def test_a_damaged_download_names_the_blob_to_delete_and_comes_back_whole(hub_server, tmp_path):
    status, out, err, message = run_load("gpt2", tmp_path / "hf", hub_server.url)
    assert status == 0, err
    weights = Path(out) / "model.safetensors"
    blob = weights.resolve()  # the snapshot entry is a link into blobs/
    blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])
    status, out, err, message = run_load("gpt2", tmp_path / "hf", hub_server.url)
    assert status == 1, err
    assert message.startswith(f"CheckpointError: {weights} is truncated")
    assert message.endswith(f": delete {blob} and download it again")
    blob.unlink()
    hub_server.requests.clear()
    status, out, err, message = run_load("gpt2", tmp_path / "hf", hub_server.url)
    assert status == 0, err
    assert hub_server.files_got() == ["model.safetensors"]


def test_cached_models_lists_the_downloaded_repo(hub_server, tmp_path):
    assert cached_models(tmp_path / "hf" / "hub") == []  # no cache folder yet
    status, out, err, message = run_load("gpt2", tmp_path / "hf", hub_server.url)
    assert status == 0, err
    [model] = cached_models(tmp_path / "hf" / "hub")
    assert model.repo_id == "openai-community/gpt2"
    assert model.snapshot == Path(out)
    assert model.size_on_disk >= sum(p.stat().st_size for p in Path(out).iterdir()) > 0
    assert model.last_modified > 0


def test_a_truncated_safetensors_is_a_checkpoint_error(tiny_gpt2, tmp_path):
    model_dir = shutil.copytree(tiny_gpt2, tmp_path / "model")
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="is truncated"):
        load(str(model_dir))


def test_a_corrupt_safetensors_is_a_checkpoint_error(tiny_gpt2, tmp_path):
    model_dir = shutil.copytree(tiny_gpt2, tmp_path / "model")
    (model_dir / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + bytes(64))
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        load(str(model_dir))


def test_a_directory_without_config_json_is_an_error(tmp_path):
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(CheckpointError, match="has no config.json: is it a Hugging Face model directory"):
        load(str(tmp_path))


def test_a_directory_of_another_architecture_is_an_error(tiny_gpt2, tmp_path):
    model_dir = shutil.copytree(tiny_gpt2, tmp_path / "model")
    (model_dir / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(CheckpointError, match="model_type 'bert' is not supported"):
        load(str(model_dir))


def run_cli(args: list[str], hf_home: Path, endpoint: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and "proxy" not in k.lower()}
    env.update(HF_HOME=str(hf_home), HF_ENDPOINT=endpoint, NO_PROXY="127.0.0.1", NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "llmx", *args], env=env, capture_output=True, text=True, timeout=60)


def test_the_cli_downloads_once_then_lists_the_cached_model(hub_server, tmp_path):
    import json

    first = run_cli(["predict", "Hullo, my name is", "--top", "3", "--json"], tmp_path / "hf", hub_server.url)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["prompt_tokens"] == 7
    hub_server.requests.clear()
    second = run_cli(["continue", "-m", "gpt2", "Hullo", "--max-tokens", "3", "--seed", "1"], tmp_path / "hf",
                     hub_server.url)
    assert second.returncode == 0 and second.stdout.strip() and hub_server.requests == []
    listing = json.loads(run_cli(["models", "--json"], tmp_path / "hf", hub_server.url).stdout)
    assert [m["id"] for m in listing["cached"]] == ["openai-community/gpt2"]
    assert listing["cached"][0]["size_on_disk"] > 1_000_000 and listing["short_names"]["gpt2"] == "openai-community/gpt2"
    table = run_cli(["models"], tmp_path / "hf", hub_server.url).stdout
    assert "openai-community/gpt2" in table.splitlines()[2] and "MB" in table


def test_an_unsupported_architecture_is_refused_before_any_weight_is_fetched(hub_server, tiny_gpt2, tmp_path):
    folder = shutil.copytree(tiny_gpt2, tmp_path / "bert")  # weights and tokenizer files all there to fetch
    (folder / "config.json").write_text('{"model_type": "bert", "vocab_size": 30522}')
    hub_server.add_repo("someone/bert", folder)
    status, out, err, message = run_load("someone/bert", tmp_path / "hf", hub_server.url)
    assert status == 1, err
    assert message == ("CheckpointError: config.json of someone/bert: model_type 'bert' is not supported "
                       "(llmx runs gpt2, llama, qwen2 and gemma3): pick a GPT-2, Llama, Qwen2 or Gemma 3 model")
    assert hub_server.files_got() == ["config.json"]
    assert all("model.safetensors" not in line for line in hub_server.requests)  # not even asked about


def test_a_llama_repo_fetches_its_architectures_tokenizer_files(hub_server, tiny_llama, tmp_path):
    hub_server.add_repo("someone/llama", tiny_llama)
    status, out, err, message = run_load("someone/llama", tmp_path / "hf", hub_server.url)
    assert status == 0, err
    assert sorted(hub_server.files_got()) == ["config.json", "model.safetensors", "tokenizer.json",
                                              "tokenizer_config.json"]
