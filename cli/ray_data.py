"""`llmx score --jsonl` and `llmx continue --jsonl` past one machine: callable classes for Ray Data's map_batches.

    import ray
    from llmx.ray_data import Scorer

    (ray.data.read_json("corpus.jsonl")
        .map_batches(Scorer, fn_constructor_kwargs={"model": "gpt2"}, batch_size=16,
                     compute=ray.data.ActorPoolStrategy(size=4))  # 4 workers, each loads the model once
        .write_json("scores/"))

Ray gives each worker (an actor) batches of rows: a dict of NumPy arrays, a pandas DataFrame or a pyarrow
Table, as map_batches' batch_format says. Each row's "text" is handled by the same functions as a line of
`--jsonl`, and the batch comes back in the same form with the fields that line's result has: "model", the
results and "error" (null, or what went wrong with that row; then its result fields are null). The other
columns pass through, except that one with the name of a field llmx writes is replaced, as in --jsonl; like
--jsonl, the input "text" is not written back (`continue` writes its continuation there). Ray's rows have no
line numbers, so there is no "line": pass an id column through, or keep the order with
`ray.data.DataContext.get_current().execution_options.preserve_order = True`.

This module does not import Ray (`pip install 'llmx[ray]'` installs it).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from .batch import text_of
from .commands.core import continue_lines
from .commands.score import score_text
from .data import Continued, Scores, record
from .engine.errors import InputError, LlmxError
from .inputs import load_model
from .notices import warn
from .options import DEFAULT_MODEL


class Scorer:
    """`llmx score --jsonl [--bos] [--stride N]` for map_batches: each row's tokens, surprisal and totals."""

    def __init__(self, model: str | None = None, bos: bool = False, stride: int | None = None,
                 adapter: str | None = None):
        self.model, self.lm = loaded(model, adapter)
        self.bos, self.stride = bos, stride
        self.fields = json_fields(Scores)  # the result fields of a row, in the order --jsonl writes them

    def __call__(self, batch):
        return mapped(batch, self.results, self.fields)

    def results(self, texts: list) -> list[dict]:
        """One result per text (the fields of its --jsonl line but "line"), in order."""
        return [row_result(text, self.score) for text in texts]

    def score(self, text: str, notice) -> dict:
        return record(self.model, score_text(self.lm, text, self.bos, self.stride, notice))


class Continuer:
    """`llmx continue --jsonl` for map_batches, with the same options (`context` is the context's text, which
    the command line reads from --context FILE): each row's continuation in "text", its "ids", "finish_reason"."""

    def __init__(self, model: str | None = None, max_tokens: int = 50, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                 stop: tuple[str, ...] = (), echo: bool = False, context: str | None = None,
                 adapter: str | None = None):
        from .engine import Sampling

        self.model, self.lm = loaded(model, adapter)
        self.max_tokens, self.echo, self.context = max_tokens, echo, context
        self.options = dict(sampling=Sampling(temperature=temperature, top_k=top_k, top_p=top_p), seed=seed,
                            stop=tuple(stop))
        self.fields = json_fields(Continued, optional=echo)  # "prompt" only with echo, as with --echo

    def __call__(self, batch):
        return mapped(batch, self.results, self.fields)

    def results(self, texts: list) -> list[dict]:
        """One result per text (the fields of its --jsonl line but "line"), in order. The rows are continued
        together, as `continue --jsonl` continues a micro-batch: one weight pass per step for all of them."""
        checked = [row_result(text, lambda text, notice: {"text": text}) for text in texts]
        good = [i for i, row in enumerate(checked) if row["error"] is None]
        lines = [checked[i]["text"] for i in good]
        outcomes = continue_lines(self.lm, self.model, self.context, self.max_tokens, self.echo, self.options,
                                  lines, [notice_for(text) for text in lines])
        for i, outcome in zip(good, outcomes):
            checked[i] = {"error": str(outcome)} if isinstance(outcome, LlmxError) else {**outcome, "error": None}
        return checked


def loaded(model: str | None, adapter: str | None):
    """(the model's name, the model), on the worker: `model`, else LLMX_MODEL, else GPT-2, as the command line
    resolves -m; with BLAS threads set first, as `llmx` sets them when it starts."""
    use_blas_threads()
    name = model or os.environ.get("LLMX_MODEL") or DEFAULT_MODEL
    return name, load_model(name, adapter)


def mapped(batch, results_of, fields: tuple[str, ...]):
    """The batch with "text" replaced by the results of its texts: [rows] columns in, [rows] columns out.
    A row that failed has its message in "error" and None in the other result columns."""
    results = results_of(list(column(batch, "text")))
    names = ("model", *fields, "error")
    return with_columns(without(batch, "text"), {name: [result.get(name) for result in results] for name in names})


def row_result(text, handle) -> dict:
    """`handle(text, notice)` and "error": None, or only "error" when the text is not a string or llmx refuses it."""
    try:
        text = text_of({"text": text})
        return {**handle(text, notice_for(text)), "error": None}
    except LlmxError as e:
        return {"error": str(e)}


def json_fields(data_class: type, optional: bool = False) -> tuple[str, ...]:
    """The fields --json writes for an object of `data_class` (see data.HIDDEN; data.OPTIONAL ones if `optional`)."""
    kinds = ("hidden",) if optional else ("hidden", "optional")
    return tuple(f.name for f in dataclasses.fields(data_class) if f.metadata.get("json") not in kinds)


def use_blas_threads() -> None:
    """LLMX_THREADS where the worker runs, else the BLAS thread count Ray gave the worker (OMP_NUM_THREADS,
    its num_cpus), else llmx's own policy (see engine/threads.py), as `llmx` sets it when it starts."""
    from .engine.threads import blas_threads, use_blas_threads as use

    threads = blas_threads(os.environ)
    if threads is not None:
        use(threads)


def notice_for(text: str):
    """A notice about one row (a cut prompt, say) as a warning on the worker's stderr, which Ray shows."""
    start = text[:30] + ("..." if len(text) > 30 else "")
    return lambda message: warn(f"the row with text {start!r}: {message}")


def column(batch, name: str) -> list:
    """Column `name` of a batch in any of Ray's batch formats; a clear error when it has none."""
    names = column_names(batch)
    if name not in names:
        raise InputError(f'the batch has no "{name}" column (it has {", ".join(map(repr, names)) or "none"}): '
                         f'give each row a "{name}", e.g. read JSON lines like {{"{name}": "..."}}')
    values = batch[name]
    return values.to_pylist() if hasattr(values, "to_pylist") else list(values)


def column_names(batch) -> list[str]:
    if isinstance(batch, dict):  # NumPy arrays by name
        return list(batch)
    if hasattr(batch, "column_names"):  # a pyarrow Table
        return list(batch.column_names)
    return list(batch.columns)  # a pandas DataFrame


def without(batch, name: str):
    """The batch without column `name`."""
    if isinstance(batch, dict):
        return {key: value for key, value in batch.items() if key != name}
    if hasattr(batch, "drop_columns"):  # a pyarrow Table
        return batch.drop_columns([name])
    return batch.drop(columns=[name])  # a pandas DataFrame


def with_columns(batch, columns: dict[str, list]):
    """The batch with `columns` added, each replacing a column of the same name (llmx's fields win)."""
    if isinstance(batch, dict):
        return {**{key: value for key, value in batch.items() if key not in columns},
                **{key: objects(values) for key, values in columns.items()}}
    if hasattr(batch, "drop_columns"):  # a pyarrow Table: each column's type is inferred from its values
        import pyarrow as pa

        batch = batch.drop_columns([key for key in columns if key in batch.column_names])
        for key, values in columns.items():
            batch = batch.append_column(key, pa.array(values))
        return batch
    batch = batch.drop(columns=[key for key in columns if key in batch.columns])
    return batch.assign(**{key: objects(values) for key, values in columns.items()})


def objects(values: list) -> np.ndarray:
    """A list as a 1-D array of Python objects, one per row (np.array would make a list of equal-length
    lists a 2-D array); Ray turns it into the column's Arrow type."""
    array = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        array[i] = value
    return array
