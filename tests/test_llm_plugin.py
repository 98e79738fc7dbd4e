"""The llm plugin, through the real `llm` command line in a subprocess (LLM_USER_PATH in a temporary folder)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from test_cli import run

import llm  # noqa: E402,F401 - the real llm package (test extra) must be installed


@pytest.fixture(scope="module")
def env(tiny_gpt2, tmp_path_factory):
    """llm's directory with an llmx-models.txt, LLMX_LLM_MODELS, and a Hugging Face cache holding one model."""
    home = tmp_path_factory.mktemp("llm-home")
    (home / "llmx-models.txt").write_text(f"# models for llm\nfrom-file={tiny_gpt2}  # the tiny GPT-2\n")
    cache = tmp_path_factory.mktemp("hf-cache")
    repo = cache / "models--someone--tiny-cached"
    shutil.copytree(tiny_gpt2, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    return {**os.environ, "LLM_USER_PATH": str(home), "LLMX_LLM_MODELS": f"tiny={tiny_gpt2}",
            "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}


def llm_cli(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llm", *args], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)


def test_llm_models_lists_configured_short_and_cached_models(env, tiny_gpt2):
    r = llm_cli(env, "models")
    assert r.returncode == 0, r.stderr
    ours = [line for line in r.stdout.splitlines() if line.startswith("llmx: ")]
    # from-file has no alias: its directory is already tiny's alias
    assert ours == [f"llmx: tiny (aliases: {tiny_gpt2})", "llmx: from-file",
                    "llmx: gpt2 (aliases: openai-community/gpt2)",
                    "llmx: gpt2-medium (aliases: openai-community/gpt2-medium)",
                    "llmx: gpt2-large (aliases: openai-community/gpt2-large)",
                    "llmx: gpt2-xl (aliases: openai-community/gpt2-xl)",
                    "llmx: distilgpt2 (aliases: distilbert/distilgpt2)",
                    "llmx: someone/tiny-cached"]


def test_llm_prompt_equals_llmx_continue(env, tiny_gpt2):
    r = llm_cli(env, "-m", "tiny", "-o", "seed", "1", "Hullo, my name is")
    assert r.returncode == 0, r.stderr
    assert r.stdout == run("continue", "-m", str(tiny_gpt2), "--seed", "1", "Hullo, my name is").stdout
    assert len(r.stdout) > 100  # 50 tokens, llmx continue's default


def test_llm_options_map_onto_llmx_options(env, tiny_gpt2):
    options = ["-o", "temperature", "0.8", "-o", "top_k", "40", "-o", "top_p", "0.9", "-o", "seed", "3",
               "-o", "max_tokens", "12"]
    r = llm_cli(env, "-m", "someone/tiny-cached", *options, "-s", "A note.", "Hullo")
    assert r.returncode == 0, r.stderr
    same = run("continue", "-m", str(tiny_gpt2), "--temperature", "0.8", "--top-k", "40", "--top-p", "0.9",
               "--seed", "3", "--max-tokens", "12", "A note.\n\nHullo")
    assert r.stdout == same.stdout
    r = llm_cli(env, "-m", "tiny", "-o", "top_p", "0", "Hullo")
    assert r.returncode == 1 and "top_p" in r.stderr


def test_entries_are_named_by_file_name_or_explicitly(tmp_path):
    from llmx.llm_plugin import Entry, parse_entry

    gguf = tmp_path / "SmolLM2.Q4_1.gguf"
    gguf.touch()
    assert parse_entry(str(gguf)) == Entry("SmolLM2.Q4_1", str(gguf), (str(gguf),))
    assert parse_entry(f"smol = {gguf}") == Entry("smol", str(gguf), (str(gguf),))
    hub_id = "HuggingFaceTB/SmolLM2-135M"
    assert parse_entry(hub_id) == Entry(hub_id, hub_id)


def test_llm_adapter_option_applies_the_adapter_as_llmx_continue_adapter_does(env, tiny_gpt2, tmp_path):
    from test_finetune import random_adapter

    from llmx.engine import load

    random_adapter(load(str(tiny_gpt2)), tmp_path / "adapter")
    adapter = str(tmp_path / "adapter")
    r = llm_cli(env, "-m", "tiny", "-o", "adapter", adapter, "-o", "seed", "1", "-o", "max_tokens", "12", "Hullo")
    assert r.returncode == 0, r.stderr
    options = ["-m", str(tiny_gpt2), "--seed", "1", "--max-tokens", "12", "Hullo"]
    assert r.stdout == run("continue", "--adapter", adapter, *options).stdout != run("continue", *options).stdout
    r = llm_cli(env, "-m", "tiny", "-o", "adapter", str(tmp_path), "Hullo")
    assert r.returncode == 1 and "has no adapter_config.json" in r.stderr
