"""The engine's shape rules (STYLE.md: one screen per idea; the engine never imports click or rich),
checked on every module so that they hold as the engine grows rather than by a reviewer's eye."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parent.parent / "engine"
MODULES = sorted(ENGINE.rglob("*.py"))
MAX_MODULE_LINES = 300  # split a module that grows past this into ideas of their own
MAX_FUNCTION_LINES = 40  # a function longer than a screen is several steps: name them


def names(path: Path) -> str:
    return str(path.relative_to(ENGINE.parent))


def test_there_are_engine_modules_to_check():
    assert len(MODULES) > 30 and ENGINE / "model.py" in MODULES


@pytest.mark.parametrize("path", MODULES, ids=names)
def test_module_is_at_most_300_lines(path):
    assert path.read_text().count("\n") <= MAX_MODULE_LINES


@pytest.mark.parametrize("path", MODULES, ids=names)
def test_functions_are_at_most_40_lines(path):
    tree = ast.parse(path.read_text())
    long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


@pytest.mark.parametrize("path", MODULES, ids=names)
def test_engine_never_imports_the_cli_libraries(path):
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"click", "rich", "llmx"}
