"""What every tracker does (`Tracker`), all of them at once (`Trackers`), and the recipe and
plan as flat parameters."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from launcher.contract.plan import Plan
from launcher.contract.vocabulary import JobState
from launcher.recipe.schema import Recipe


class Tracker(Protocol):
    """One experiment tracker of a run, on rank 0."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Scalars at a training step."""

    def table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        """A small table (generated samples) at a step."""

    def finish(self, files: Sequence[Path], ended: JobState) -> None:
        """The run's end, `ended` COMPLETED, STOPPED (it continues later) or FAILED: attach
        `files` (summary, report)."""


class Trackers:
    """Every tracker of a run, fed the same calls; none at all off rank 0."""

    def __init__(self, trackers: Sequence[Tracker] = ()) -> None:
        self.trackers = list(trackers)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """The numbers of `metrics` (None, text and lists are left out)."""
        scalars = {key: float(value) for key, value in metrics.items()
                   if isinstance(value, int | float) and not isinstance(value, bool)}
        for tracker in self.trackers:
            tracker.log(scalars, step)

    def table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        for tracker in self.trackers:
            tracker.table(key, columns, rows, step)

    def finish(self, files: Sequence[Path] = (),
               ended: JobState = JobState.COMPLETED) -> None:
        """Once; later calls do nothing."""
        present = [path for path in files if path.is_file()]
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            tracker.finish(present, ended)


def error_line(err: Exception, secrets: Sequence[str | None]) -> str:
    """`Type: first line` of a tracker's error (200 characters at most), each of `secrets` and
    any URL's `user:password@` masked: what may be printed or written to the event log."""
    text = re.sub(r"//[^/@\s]*@", "//", (str(err).strip().splitlines() or [""])[0][:200])
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return f"{type(err).__name__}: {text}"


def flat_params(recipe: Recipe, plan: Plan) -> dict[str, str]:
    """The resolved recipe and the plan as `recipe.train.lr`-style keys and text values."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}", inner)
        else:
            flat[prefix] = "" if value is None else str(value)

    walk("recipe", recipe.model_dump(mode="json"))
    walk("plan", plan.to_dict())
    return flat
