"""A recipe's train and eval rows in canonical shape, with its label map and row counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from launcher.contract.errors import UsageError
from launcher.contract.reports import DataStats
from launcher.data.errors import DataError
from launcher.data.formats import load_rows
from launcher.data.labels import LabelMap
from launcher.data.mixing import mix, split_rows
from launcher.recipe.schema import Recipe


@dataclass
class Splits:
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    label_map: LabelMap | None
    stats: DataStats


def load_splits(recipe: Recipe) -> Splits:
    """Train rows, eval rows (eval files, or a seeded held-out fraction), label map.

    Data errors become `UsageError`s naming the file and line; the control plane calls this
    before launching, so a bad row never reaches the workers.
    """
    data = recipe.data
    fmt = str(data.format)
    try:
        train = load_rows(data.train, fmt, data.columns, data.on_bad_row)
        label_map = train.label_map
        if data.train_weights:
            parts = [load_rows([path], fmt, data.columns, data.on_bad_row, label_map).rows
                     for path in data.train]
            train.rows = mix(list(zip(parts, data.train_weights, strict=True)), data.split_seed)
        evaluation = (load_rows(data.eval, fmt, data.columns, data.on_bad_row, label_map,
                                role="eval") if data.eval else None)
    except (DataError, ValueError) as err:
        raise UsageError(f"bad data: {err}") from None
    rows = train.rows[: data.max_train_samples] if data.max_train_samples else train.rows
    if evaluation is not None:
        eval_rows = evaluation.rows
    elif data.eval_fraction > 0:
        rows, eval_rows = split_rows(rows, data.eval_fraction, data.split_seed)
    else:
        eval_rows = []
    if data.max_eval_samples:
        eval_rows = eval_rows[: data.max_eval_samples]
    if not rows:
        raise UsageError(f"no training rows left in {data.train} after loading and filtering")
    skipped = len(train.skipped) + (len(evaluation.skipped) if evaluation else 0)
    stats = DataStats(train_rows=len(rows), eval_rows=len(eval_rows), skipped_rows=skipped)
    return Splits(train=rows, eval=eval_rows, label_map=label_map, stats=stats)
