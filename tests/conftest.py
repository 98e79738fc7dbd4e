"""Shared fixtures: tiny random-weight checkpoints in the Hugging Face layout, written per test session.

GPT-2's real vocabulary (OpenAI's encoder.json / vocab.bpe, byte-identical to the Hub's vocab.json /
merges.txt) and the SmolLM2 GGUF are fetched into .cache/test-data by `.ci/run`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = Path(os.environ.get("LLMX_TEST_DATA", REPO / ".cache" / "test-data"))


def test_data(name: str) -> Path:
    path = TEST_DATA / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `bash .ci/fetch-test-data` (or .ci/run), which downloads it "
                    "from the package registries", pytrace=False)
    return path


@pytest.fixture(scope="session")
def gpt2_vocab() -> Path:
    """A folder with GPT-2's vocab.json and merges.txt."""
    return test_data("gpt2-vocab")


def write_tiny_gpt2(directory: Path, vocab: Path, *, seed: int = 0, **overrides) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    settings = dict(vocab_size=50257, n_positions=64, n_embd=64, n_layer=2, n_head=4)
    settings.update(overrides)
    model = GPT2LMHeadModel(GPT2Config(**settings))
    model.save_pretrained(directory)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(vocab / name, directory / name)
    return directory


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory, gpt2_vocab) -> Path:
    """A 2-layer, 64-wide GPT-2 with random weights and GPT-2's real tokenizer."""
    return write_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"), gpt2_vocab)


@pytest.fixture(scope="session")
def pickle_only_repo(tmp_path_factory, tiny_gpt2) -> Path:
    """A repo folder with config.json and pytorch_model.bin (pickle bytes, never loaded) but no safetensors."""
    folder = tmp_path_factory.mktemp("pickle-only")
    shutil.copy(tiny_gpt2 / "config.json", folder / "config.json")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04}\x94.")  # pickle.dumps({})
    return folder


@pytest.fixture
def hub_server(tiny_gpt2, pickle_only_repo):
    """A stand-in for the Hugging Face Hub on 127.0.0.1 (tests/hub_server.py), with a fresh request log,
    serving the tiny GPT-2 as `openai-community/gpt2` and `someone/pickle-only`."""
    from hub_server import HubServer

    with HubServer() as hub:
        hub.add_repo("openai-community/gpt2", tiny_gpt2)
        hub.add_repo("someone/pickle-only", pickle_only_repo)
        yield hub
