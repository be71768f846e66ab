"""The eval examples rank 0 shows: the first EXAMPLES eval rows as the trackers' table
`eval/examples` (each row the task's `shown`: picture or sound, reference, prediction) and, at
the final eval, the first REPORTED pictures with boxes or masks drawn (true beside predicted) as
PNGs in the run folder, which report.png shows."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from launcher.data.encode.media import Picture
from launcher.tasks.base import Example, Task
from launcher.trackers.base import Trackers
from launcher.worker.evaluation import EvalRow

EXAMPLES = 16  # eval rows shown to the trackers with their pictures or sounds
REPORTED = 4  # pictures with boxes or masks kept for report.png
COLUMNS = ["input", "reference", "prediction"]


def log_examples(task: Task, examples: Sequence[Example], rows: list[EvalRow],
                 names: list[str] | None, tracker: Trackers, step: int,
                 kept: Path | None = None) -> None:
    """The table of the first EXAMPLES `rows` (eval index, prediction, reference) of a task
    that shows its examples, label ids named by `names`; `kept` (the final eval): the folder
    that then holds the first REPORTED annotated pictures, drawn, as 0.png, 1.png, ..."""
    shown = [task.shown(examples[index], named(reference, names), named(prediction, names))
             for index, prediction, reference in rows[:EXAMPLES]]
    if not shown or shown[0] is None:
        return
    tracker.table("eval/examples", COLUMNS, shown, step)
    if kept is not None:
        keep([row[0] for row in shown], kept)


def keep(cells: list[Any], folder: Path) -> None:
    """The first REPORTED pictures with layers, drawn as TensorBoard shows them, into `folder`
    (emptied first; not made when there are none)."""
    from PIL import Image

    from launcher.data.encode.annotated import flattened

    pictures = [cell for cell in cells if isinstance(cell, Picture) and cell.layers][:REPORTED]
    shutil.rmtree(folder, ignore_errors=True)
    if pictures:
        folder.mkdir(parents=True)
    for number, picture in enumerate(pictures):
        Image.fromarray(flattened(picture)).save(folder / f"{number}.png")


def named(value: Any, names: list[str] | None) -> Any:
    """A classification label id as its name; other values as they are."""
    return names[value] if isinstance(value, int) and names else value
