"""`sft-launch leaderboard SWEEP_DIR`: every point of a sweep with its metric, best first; the
winner's resolved recipe as `best.toml`, and `sweep.png` (the metric against each setting)."""

from __future__ import annotations

import shutil

from rich.table import Table

from launcher.backends import backend_for
from launcher.contract.errors import UsageError
from launcher.contract.reports import Summary
from launcher.contract.sweep import Entry, Leaderboard, SweepFolder, SweepRecord
from launcher.contract.vocabulary import JobState
from launcher.recipe.load import load_recipe
from launcher.tasks.registry import task_spec
from launcher.ui.pictures import draw_sweep

# Metrics a user may name with --metric for which lower is better (a task's main metric says
# its own direction).
LOWER_IS_BETTER = ("loss", "perplexity", "wer", "cer")


def rank(folder: SweepFolder, metric: str | None) -> Leaderboard:
    """Every point's state and metric, best first (points without the metric last)."""
    record = SweepRecord.read(folder.record)
    first = load_recipe(folder.point(record.points[0]).recipe)
    spec = task_spec(first.task.kind)
    name = (metric or spec.main_metric).removeprefix("eval_")
    lower = (not spec.higher_is_better if name == spec.main_metric
             else name in LOWER_IS_BETTER)
    entries = []
    backend = backend_for(record.backend)
    for point in record.points:
        run = folder.point(point)
        summary = Summary.read_if_exists(run.summary)
        state = backend.status(run).state if run.plan.is_file() else JobState.NOT_SUBMITTED
        value = summary.eval.get(name) if summary else None
        if summary and value is None and name not in summary.eval:
            raise UsageError(f"--metric {metric}: {point.run} measured "
                             f"{', '.join(summary.eval) or 'no eval metric'}")
        entries.append(Entry(point=point, state=state, value=value,
                             steps=summary.steps if summary else None,
                             wall_time_s=summary.wall_time_s if summary else None))
    entries.sort(key=lambda e: (e.value is None, (e.value if lower else -e.value)
                                if e.value is not None else 0.0))
    return Leaderboard(metric=name, lower_is_better=lower, entries=tuple(entries))


def publish(folder: SweepFolder, board: Leaderboard) -> None:
    """leaderboard.json, best.toml (the winner's resolved recipe) and sweep.png."""
    board.write(folder.leaderboard)
    winner = board.entries[0]
    if winner.value is not None:
        shutil.copyfile(folder.point(winner.point).recipe, folder.best)
    draw_sweep(board.metric, [(e.point.settings, e.value) for e in board.entries],
               folder.picture, f"{folder.path.name}: eval {board.metric}")


def table(folder: SweepFolder, board: Leaderboard) -> Table:
    keys = sorted({key for e in board.entries for key in e.point.settings})
    order = "lower is better" if board.lower_is_better else "higher is better"
    shown = Table(title=f"{folder.path.name}: eval {board.metric} ({order})")
    for column in ("#", "point", *keys, board.metric, "steps", "wall s", "state"):
        shown.add_column(column, justify="right" if column in (board.metric, "steps",
                                                               "wall s") else "left")
    for place, entry in enumerate(board.entries, 1):
        shown.add_row(str(place), entry.point.run, *(entry.point.settings.get(k, "") for k in keys),
                      "-" if entry.value is None else f"{entry.value:.4f}",
                      "-" if entry.steps is None else str(entry.steps),
                      "-" if entry.wall_time_s is None else f"{entry.wall_time_s:.0f}",
                      entry.state)
    return shown
