"""The recipes of README.md (its ```bash and ```python blocks), run as written by bash and python on the tiny model: plumbing, not answers.

llmx gets the model from LLMX_MODEL, and `llm -m gpt2` gets it because LLMX_LLM_MODELS names the tiny
model `gpt2`. A block that needs a tool this machine lacks (rg, GNU parallel, ...) is skipped; the
xargs and grep recipes need only coreutils.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```(bash|python)\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.S | re.M)
OPTIONAL_TOOLS = ("rg", "parallel", "ttok", "jq")
TIKTOKEN_GPT2 = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
CORPUS = [{"id": i, "text": f"Sentence number {i} is about the weather in town."} for i in range(40)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_gpt2, gpt2_vocab):
    work = tmp_path_factory.mktemp("recipes")
    (work / "notes").mkdir()
    (work / "notes" / "everest.txt").write_text("Mt. Everest is 8,849 m high.\nIt lies in the Himalayas.\n")
    (work / "notes" / "nile.txt").write_text("The Nile is about 6,650 km long.\n")
    (work / "corpus.jsonl").write_text("".join(json.dumps(record) + "\n" for record in CORPUS))
    shims = tmp_path_factory.mktemp("bin")
    (shims / "llm").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m llm "$@"\n')  # the venv's llm
    (shims / "llm").chmod(0o755)
    tiktoken = tmp_path_factory.mktemp("tiktoken")  # ttok -m gpt2 offline: tiktoken's cache, from the same files
    for url_name, ours in (("vocab.bpe", "merges.txt"), ("encoder.json", "vocab.json")):
        shutil.copy(gpt2_vocab / ours, tiktoken / hashlib.sha1((TIKTOKEN_GPT2 + url_name).encode()).hexdigest())
    env = {**os.environ, "PATH": os.pathsep.join([str(shims), str(Path(sys.executable).parent), os.environ["PATH"]]),
           "LLMX_MODEL": str(tiny_gpt2), "LLMX_LLM_MODELS": f"gpt2={tiny_gpt2}",
           "LLM_USER_PATH": str(tmp_path_factory.mktemp("llm-home")), "TIKTOKEN_CACHE_DIR": str(tiktoken),
           "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "LLMX_THREADS": "1"}
    return work, env


def needs(code: str) -> list[str]:
    commands = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith("#"))
    return [tool for tool in OPTIONAL_TOOLS if re.search(rf"(^|[|\s]){tool}\s", commands)]


def test_the_doc_has_the_recipes():
    kinds = [kind for kind, _ in BLOCKS]
    assert kinds.count("bash") == 5 and kinds.count("python") == 3
    assert any("llmx continue --context -" in code for _, code in BLOCKS)
    assert any("ttok" in code and "llm -m gpt2" in code for _, code in BLOCKS)
    assert any("parallel --pipe -N 100" in code for _, code in BLOCKS)
    assert any("Hooks().add" in code and "show.lens" in code for _, code in BLOCKS)


@pytest.mark.parametrize("kind, code", BLOCKS, ids=[f"{kind}-{i}" for i, (kind, _) in enumerate(BLOCKS)])
def test_recipe_runs(kind, code, workdir, tiny_gpt2):
    work, env = workdir
    if "from llmx.ray_data import" in code:
        pytest.skip("tests/test_ray_data.py runs the Ray Data recipe, on its local Ray instance")
    missing = [tool for tool in needs(code) if shutil.which(tool, path=env["PATH"]) is None]
    if missing:
        pytest.skip(f"not installed here: {', '.join(missing)}")
    (work / "scores.jsonl").unlink(missing_ok=True)
    if kind == "bash":
        command = ["bash", "-euo", "pipefail", "-c", code]
    else:
        command = [sys.executable, "-c", code.replace('"gpt2"', repr(str(tiny_gpt2)))]
    r = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    if "scores.jsonl" in code:
        scores = [json.loads(line) for line in (work / "scores.jsonl").read_text().splitlines()]
        assert [s["id"] for s in scores] == [c["id"] for c in CORPUS] and all("perplexity" in s for s in scores)
    else:
        assert r.stdout.strip()
    assert sorted(p.name for p in work.iterdir()) == ["corpus.jsonl", "notes"] + ["scores.jsonl"] * (
        "scores.jsonl" in code)
