"""What `sft-launch eval` and `predict` write into a run folder: `EvalReport`, `Prediction`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from launcher.contract.records import JsonRecord


@dataclass(frozen=True)
class EvalReport(JsonRecord):
    """`eval-<name>.json`: the run's final model scored on the labelled file `data` (its stem is
    `<name>`) with the task's own metrics; `tables` holds the per-entity scores of NER."""

    data: str  # the file, absolute
    format: str  # its row format, as read
    task: str  # the run's task.kind
    rows: int
    metrics: dict[str, float]
    tables: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    predictions: str = ""  # the predictions file, relative to the run folder


@dataclass(frozen=True)
class Prediction(JsonRecord):
    """One line of `predictions-<name>.jsonl`, by row of the data file (0-based `index`): a
    label name, a tag per word, a generated text or detections (COCO's: ``image_id`` the
    index, ``category_id``, ``bbox`` [x, y, w, h], ``score``, and the ``label`` name);
    `reference` is what the file says (None from `predict`, or for a conversation that does
    not end with an answer)."""

    index: int
    prediction: str | list[str] | list[dict[str, Any]]
    reference: str | list[str] | list[dict[str, Any]] | None = None
