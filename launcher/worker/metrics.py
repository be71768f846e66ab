"""A task's metrics (`Metrics`: numbers, and tables such as per-entity scores) split into its
numbers and its tables, or flattened into tracker keys."""

from __future__ import annotations

from typing import Any

Metrics = dict[str, Any]  # a task's metrics: floats, and tables (dicts) such as per-entity scores


def scalars(metrics: Metrics) -> dict[str, float]:
    """The metrics that are numbers (tables such as per-entity scores left out)."""
    return {k: v for k, v in metrics.items() if not isinstance(v, dict)}


def tables(metrics: Metrics) -> dict[str, Any]:
    """The metrics that are tables (per-entity scores)."""
    return {k: v for k, v in metrics.items() if isinstance(v, dict)}


def flatten(metrics: Metrics, prefix: str) -> dict[str, float]:
    """Scalars for W&B: a nested table (per-entity scores) becomes `eval/per_entity/person/f1`."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
