"""Every example in every command's --help, and every llmx command in README.md's ```console and ```sh
blocks, run as written by bash (with -euo pipefail) on a small random model; plumbing, not answers.

The default model (openai-community/gpt2, also reached as `gpt2`) comes from a stand-in for the Hub on
127.0.0.1 (tests/hub_server.py) serving a 12-layer, 32-wide random GPT-2 with GPT-2's context (deep and
long enough for the examples' --layer 9 and --stride 512), downloaded once into a temporary HF_HOME,
then read offline. `.gguf` examples use the SmolLM2 file of the test data. The input files the examples read (notes.txt, prompts.txt, questions.jsonl, ...)
are made in a fresh folder for each example. README's ```bash blocks are run by test_docs_pipes.py; from
the other blocks only llmx commands run (a `pip install ... && llmx ...` line runs its llmx part: installing
is .ci/run's job), and the `$ ` lines of a console block (the rest is output).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TEST_DATA, write_tiny_gpt2
from sae_folders import write_sae
from test_cli import command_paths, run

README = Path(__file__).resolve().parents[1] / "README.md"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SAE = "jbloom/GPT2-Small-SAEs-Reformatted/blocks.8.hook_resid_pre"  # served with a random SAE
INPUTS = {
    "notes.txt": "Mt. Everest is 8,849 m high.\nThe Nile is about 6,650 km long.\n",
    "prompts.txt": "Hullo, my name is\nThe capital of France is\n",
    "sentences.txt": "The capital of France is Paris.\nThe sky is blue.\n",
    "essay.txt": "The capital of France is Paris. It lies on the Seine.\n" * 3,
    "questions.jsonl": "".join(json.dumps({"id": i, "text": q}) + "\n" for i, q in
                               enumerate(["Q: How high is Mt. Everest?\nA:", "Q: How long is the Nile?\nA:"])),
}


def help_examples() -> list[tuple[str, str]]:
    """(command, example) for each line of the Examples: block of each command's --help, and llmx's own."""
    examples = []
    for path in [(), *command_paths()]:
        text = run(*path, "--help").stdout
        assert "Examples:\n" in text, f"llmx {' '.join(path)} --help has no Examples: block"
        for line in text.split("Examples:\n", 1)[1].splitlines():
            if not line.startswith("  "):
                break
            examples.append((" ".join(("llmx", *path)), line.strip()))
    return examples


def readme_commands() -> list[str]:
    """The llmx commands of README's ```console ($ lines) and ```sh blocks; `a && b`: the parts that run llmx."""
    commands = []
    for kind, body in re.findall(r"^```(console|sh)\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M):
        lines = [line[2:] for line in body.splitlines() if line.startswith("$ ")] if kind == "console" else [
            line for line in body.splitlines() if line and not line.startswith("#")]
        parts = [part.strip() for line in lines for part in line.split(" && ")]
        commands += [part for part in parts if re.match(r"llmx |.*\| *llmx ", part)]
    return commands


HELP = help_examples()
DOC = readme_commands()


@pytest.fixture(scope="module")
def environment(tmp_path_factory, gpt2_vocab):
    """The environment the examples run in: llmx on PATH, the default model from the stand-in Hub, offline."""
    from hub_server import HubServer

    model = write_tiny_gpt2(tmp_path_factory.mktemp("gpt2-12-layers"), gpt2_vocab,
                            n_layer=12, n_embd=32, n_head=4, n_positions=1024)
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("HF_", "HUGGINGFACE_", "LLMX_MODEL")) and "proxy" not in k.lower()}
    env = {**clean, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
           "HF_HOME": str(tmp_path_factory.mktemp("hf-home")), "NO_PROXY": "127.0.0.1", "NO_COLOR": "1",
           "COLUMNS": "100", "LLMX_THREADS": "1"}
    saes = tmp_path_factory.mktemp("saes")  # the examples' SAE repo, shaped for this model
    write_sae(saes / "blocks.8.hook_resid_pre", 32, 128, "standard", "blocks.8.hook_resid_pre", style="old")
    with HubServer() as hub:
        hub.add_repo("openai-community/gpt2", model)
        hub.add_repo("jbloom/GPT2-Small-SAEs-Reformatted", saes)
        for command in (["predict", "x"], ["features", "x", "--sae", SAE]):
            fetched = subprocess.run(["llmx", *command], env={**env, "HF_ENDPOINT": hub.url},
                                     capture_output=True, text=True, timeout=120)
            assert fetched.returncode == 0, fetched.stderr
    return {**env, "HF_HUB_OFFLINE": "1"}


def run_example(command: str, env: dict, work: Path) -> None:
    for name, text in INPUTS.items():
        (work / name).write_text(text)
    (work / GGUF).symlink_to(TEST_DATA / GGUF)
    (work / ".cache").mkdir()
    (work / ".cache" / "test-data").symlink_to(TEST_DATA)
    before = set(work.iterdir())
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=work, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, f"{command}\n{r.stderr}"
    assert "Traceback" not in r.stderr
    made = set(work.iterdir()) - before
    assert r.stdout.strip() or made, f"{command} printed nothing and made no file"
    assert all(path.stat().st_size > 0 for path in made), f"{command} made an empty file"


def test_every_command_has_examples_and_the_readme_has_llmx_commands():
    commands = {command for command, _ in HELP}
    assert len(commands) == len(list(command_paths())) + 1
    assert all(any(example.count("llmx") for c, example in HELP if c == command) for command in commands)
    assert any("models show .cache/test-data/" in c for c in DOC) and any("--temperature 0 --max-tokens 8" in c
                                                                          for c in DOC)


@pytest.mark.parametrize("command", [example for _, example in HELP] + DOC)
def test_no_example_puts_an_escape_in_double_quotes(command):
    """In "..." bash keeps \\n as a backslash and an n, not a newline: an example meaning a newline
    writes $'...\\n...' (or gives it to an option that reads escapes, in single quotes: --stop '\\n')."""
    assert not re.search(r'(?<![$\\])"[^"]*\\[nt][^"]*"', command), command


@pytest.mark.parametrize("command", [example for _, example in HELP], ids=[f"{c}: {e}" for c, e in HELP])
def test_help_example_runs(command, environment, tmp_path):
    run_example(command, environment, tmp_path)


@pytest.mark.parametrize("command", DOC)
def test_readme_command_runs(command, environment, tmp_path):
    run_example(command, environment, tmp_path)
