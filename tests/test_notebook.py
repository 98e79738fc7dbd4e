"""examples/look-inside.ipynb, executed as a reader would run it (nbclient, the venv's python3 kernel), so it never rots."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import test_data as needs_test_data

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "look-inside.ipynb"


def executed():
    try:
        import nbformat
        from nbclient import NotebookClient
    except ImportError:
        pytest.fail("the notebook test needs nbclient, nbformat and ipykernel: pip install -e '.[test]'",
                    pytrace=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
                   ).execute()
    return nb


@pytest.fixture(scope="module")
def notebook():
    needs_test_data("SmolLM2-135M-Instruct.Q4_1.gguf")
    return executed()


def outputs(cell) -> str:
    """Everything a code cell showed: HTML where there is some, else text."""
    parts = []
    for out in cell.get("outputs", []):
        data = out.get("data", {})
        parts.append(data.get("text/html") or data.get("text/plain") or out.get("text", ""))
    return "\n".join(parts)


def test_the_committed_notebook_has_no_outputs():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") and cell.get("execution_count") is None
               for cell in nb.cells if cell.cell_type == "code")


def test_the_notebook_runs_and_every_view_shows_in_colour(notebook):
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(out.output_type != "error" for cell in code for out in cell.outputs)
    views = [cell for cell in code if "show." in cell.source and "<pre" in outputs(cell)]
    assert len(views) == 7 and all("<span style=" in outputs(cell) for cell in views)  # styled, not plain text
    shaded = [re.search(r"show\.(\w+)\(", cell.source)[1] for cell in views if "background-color" in outputs(cell)]
    assert shaded == ["tokens", "lens", "heads", "attention", "explain"]


def test_the_notebook_tells_the_readme_story(notebook):
    shown = {cell.source.split("\n")[0]: outputs(cell) for cell in notebook.cells if cell.cell_type == "code"}
    lens = next(out for source, out in shown.items() if source.startswith("lens = show.lens"))
    assert "Paris" in lens and "probability of the top token" in lens
    top = next(out for source, out in shown.items() if source.startswith("# The data behind the view"))
    assert "token=' Paris'" in top
    heads = next(out for source, out in shown.items() if source.startswith("heads = show.heads"))
    assert "control: induction" in heads
    assert "steered" in next(out for source, out in shown.items() if source.startswith("show.steer"))
