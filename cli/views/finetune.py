"""The progress of `llmx finetune` on stderr: a Rich bar with loss, validation loss, tokens/s and the ETA."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def training_progress(total: int, done: int):
    """A context giving `update(progress)` for each step's engine.train.finetune.Progress."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..render import stderr_console

    columns = (TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
               TextColumn("ETA"), TimeRemainingColumn())
    val = {"loss": None}
    with Progress(*columns, console=stderr_console(), transient=False) as bar:
        task = bar.add_task("train", total=total, completed=done, stats="")

        def update(p) -> None:
            val["loss"] = p.val_loss if p.val_loss is not None else val["loss"]
            shown = f"val {val['loss']:.3f}" if val["loss"] is not None else "val -"
            loss = f"loss {p.loss:.3f}" if p.loss is not None else "loss -"
            bar.update(task, completed=p.step, stats=f"{loss}  {shown}  {p.tok_s:,.0f} tok/s")

        yield update
