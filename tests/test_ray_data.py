"""llmx.ray_data: `llmx score --jsonl` and `llmx continue --jsonl` as classes for Ray Data's map_batches, checked
against the command line on the tiny model: called on a batch in each of Ray's formats, and on a local Ray
instance (only 127.0.0.1, no usage stats) running README's recipe as written."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import numpy as np
import pytest
from test_cli import run

from llmx.data import to_json
from llmx.engine.errors import LlmxError

README = Path(__file__).resolve().parents[1] / "README.md"
ROWS = [{"id": 1, "text": "Hullo, my name is", "model": "input's own"},
        {"id": 2, "text": "Hi", "model": "x"},  # one token: score refuses it, continue goes on
        {"id": 3, "text": "The capital of France is Paris.", "model": "y"},
        {"id": 4, "text": "Sentence \u00e9 \u2014 with odd characters \U0001f600.", "model": "z"}]


@pytest.fixture(scope="module")
def scorer(tiny_gpt2):
    from llmx.ray_data import Scorer

    return Scorer(model=str(tiny_gpt2))


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def cli_lines(*args: str, rows: list[dict] = ROWS) -> list[dict]:
    """What `llmx ARGS --jsonl` prints for `rows`, without "line" (Ray's rows have none)."""
    r = run(*args, "--jsonl", input=jsonl(rows))
    return [{key: value for key, value in json.loads(line).items() if key != "line"} for line in r.stdout.splitlines()]


def plain(row) -> dict:
    """A row as the JSON --jsonl would write for it (NumPy values as Python ones)."""
    return json.loads(to_json(row)[0])


def as_batch(rows: list[dict], batch_format: str):
    """`rows` as Ray hands them to map_batches in `batch_format`."""
    if batch_format == "numpy":
        return {key: np.array([row[key] for row in rows], dtype=object) for key in rows[0]}
    if batch_format == "pandas":
        return pytest.importorskip("pandas").DataFrame(rows)
    return pytest.importorskip("pyarrow").Table.from_pylist(rows)


def as_rows(batch) -> list[dict]:
    if isinstance(batch, dict):
        return [plain({key: column[i] for key, column in batch.items()}) for i in range(len(batch["error"]))]
    if hasattr(batch, "to_pylist"):
        return [plain(row) for row in batch.to_pylist()]
    return [plain(row) for row in batch.to_dict("records")]


def same_as_cli(rows: list[dict], lines: list[dict], fields: tuple[str, ...]) -> None:
    """Each row has its --jsonl line's fields and values; a failed row has its error, and null for each result."""
    assert len(rows) == len(lines)
    for row, line in zip(rows, lines):
        if line["error"] is None:
            assert row == line
        else:
            assert row == {**line, **{field: None for field in ("model", *fields)}}


@pytest.mark.parametrize("batch_format", ["numpy", "pandas", "pyarrow"])
def test_a_scored_batch_has_the_fields_and_numbers_of_score_jsonl(scorer, tiny_gpt2, batch_format):
    lines = cli_lines("score", "-m", str(tiny_gpt2))
    assert [line["error"] is None for line in lines] == [True, False, True, True]
    rows = as_rows(scorer(as_batch(ROWS, batch_format)))
    same_as_cli(rows, lines, scorer.fields)
    assert rows[0]["model"] == str(tiny_gpt2) and "text" not in rows[0]  # llmx's "model" replaced the input's


def test_a_continued_batch_equals_continue_jsonl_greedy_and_seeded(tiny_gpt2):
    from llmx.ray_data import Continuer

    m = str(tiny_gpt2)
    greedy = Continuer(model=m, max_tokens=6, temperature=0, echo=True, stop=("\n",))
    assert greedy.fields == ("prompt", "text", "ids", "finish_reason")
    same_as_cli(as_rows(greedy(as_batch(ROWS, "numpy"))),
                cli_lines("continue", "-m", m, "--max-tokens", "6", "--temperature", "0", "--echo", "--stop", "\\n"),
                greedy.fields)
    seeded = Continuer(model=m, max_tokens=6, seed=7, top_k=50)
    rows = as_rows(seeded(as_batch(ROWS, "numpy")))
    same_as_cli(rows, cli_lines("continue", "-m", m, "--max-tokens", "6", "--seed", "7", "--top-k", "50"),
                seeded.fields)
    assert all(len(row["ids"]) == 6 for row in rows)  # a random model never ends early


def test_a_row_whose_text_is_not_a_string_gets_an_error_and_a_batch_without_text_fails(scorer):
    rows = as_rows(scorer({"id": np.array([1, 2]), "text": np.array(["Hullo, my name is", None], dtype=object)}))
    assert rows[0]["error"] is None and rows[0]["scored_tokens"] == 6
    assert rows[1] == {"id": 2, "error": 'the "text" field is null, not a string: give {"text": "..."}',
                       **{field: None for field in ("model", *scorer.fields)}}
    with pytest.raises(LlmxError, match=r"the batch has no \"text\" column \(it has 'id', 'words'\)"):
        scorer({"id": np.array([1]), "words": np.array(["Hullo"], dtype=object)})


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """A Ray instance on this machine for the module: 2 CPUs, no dashboard, every address 127.0.0.1 (else Ray
    takes the address of the route to the internet), no usage stats; started in (and yielded with) a folder of
    its own, which is where its workers read and write relative paths."""
    with pytest.MonkeyPatch.context() as env:
        work = tmp_path_factory.mktemp("ray-work")
        env.chdir(work)
        env.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read when ray is imported: a one-node cluster
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")
        ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[test]' installs it")
        sigterm = signal.getsignal(signal.SIGTERM)  # ray.init sets its own, which shutdown leaves in place
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            assert ray.util.get_node_ip_address() == "127.0.0.1"
            yield ray, work
        finally:
            ray.shutdown()
            signal.signal(signal.SIGTERM, sigterm)


def readme_recipe() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)
    (recipe,) = [code for code in blocks if "from llmx.ray_data import" in code]
    return recipe


def written(folder: Path) -> list[dict]:
    """The JSON lines of the files Ray wrote into `folder`, in the order of their "id"."""
    rows = [json.loads(line) for file in sorted(folder.iterdir()) for line in file.read_text().splitlines()]
    return sorted(rows, key=lambda row: row["id"])


def close_floats(row, line, decimals: int) -> bool:
    """`row` equals `line`, except that each float of `row` may be `line`'s rounded to `decimals` places."""
    if isinstance(line, dict):
        return isinstance(row, dict) and row.keys() == line.keys() and all(
            close_floats(row[key], line[key], decimals) for key in line)
    if isinstance(line, list):
        return isinstance(row, list) and len(row) == len(line) and all(map(close_floats, row, line,
                                                                           [decimals] * len(line)))
    if isinstance(line, float):
        return row == pytest.approx(line, rel=0, abs=10.0 ** -decimals)
    return row == line


def test_readme_recipe_on_local_ray_writes_what_the_command_line_prints(local_ray, tiny_gpt2):
    _, work = local_ray
    corpus = [{"id": i, "text": f"Sentence number {i} is about the weather in town."} for i in range(20)]
    corpus[5]["text"] = "Hi"  # one token: an error row for score
    (work / "corpus.jsonl").write_text(jsonl(corpus))
    exec(compile(readme_recipe().replace('"gpt2"', repr(str(tiny_gpt2))), "README.md", "exec"), {})
    m = str(tiny_gpt2)
    scores, lines = written(work / "scores"), cli_lines("score", "-m", m, rows=corpus)
    # Ray writes through pandas' to_json, which rounds floats to 10 decimal places (double_precision=10)
    assert [row["error"] for row in scores] == [line["error"] for line in lines]
    assert all(close_floats(row, line, decimals=10) for row, line in zip(scores, lines) if line["error"] is None)
    assert scores[5] == {"id": 5, "error": lines[5]["error"],
                         **{field: None for field in ("model", "tokens", "scored_tokens", "bytes", "mean_nll",
                                                      "perplexity", "bits_per_byte", "windows")}}
    answers = written(work / "answers")
    assert answers == cli_lines("continue", "-m", m, "--max-tokens", "20", "--temperature", "0", rows=corpus)


def test_rows_on_local_ray_are_score_jsonl_exactly_in_order(local_ray, scorer, tiny_gpt2, tmp_path):
    from llmx.ray_data import Scorer

    ray, _ = local_ray
    (tmp_path / "in.jsonl").write_text(jsonl(ROWS * 3))
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    dataset = ray.data.read_json(str(tmp_path / "in.jsonl")).map_batches(
        Scorer, fn_constructor_kwargs={"model": str(tiny_gpt2)}, batch_size=5, batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=2))
    same_as_cli([plain(row) for row in dataset.take_all()], cli_lines("score", "-m", str(tiny_gpt2), rows=ROWS * 3),
                scorer.fields)
