"""Sweeps: a grid (or K points drawn from it at random) of `--set` values over one recipe, with
one run folder per point under a sweep folder, submitted as one array job of the backend (on Slurm
a job array, here one run after another, followed to the end)."""

from __future__ import annotations

import itertools
import random
import shutil
from datetime import UTC, datetime
from pathlib import Path

from launcher.backends import backend_for
from launcher.backends.base import Backend
from launcher.contract.errors import LaunchError, UsageError
from launcher.contract.plan import Plan
from launcher.contract.reports import Summary
from launcher.contract.sweep import SweepFolder, SweepPoint, SweepRecord
from launcher.contract.vocabulary import BackendKind, JobState
from launcher.ops.run_setup import write_new_run
from launcher.planner.names import recipe_name, safe_name
from launcher.recipe.load import load_recipe
from launcher.trackers.mlflow_sync import sweep_parent
from launcher.ui.progress import console, metrics_text
from launcher.ui.waiting import follow_array, stopping

Grid = dict[str, tuple[str, ...]]


def parse_grid(items: list[str]) -> Grid:
    """`--grid train.lr=1e-5,3e-5` (repeatable) -> {"train.lr": ("1e-5", "3e-5")}."""
    grid: Grid = {}
    for item in items:
        key, sep, values = item.partition("=")
        choices = tuple(v.strip() for v in values.split(",") if v.strip())
        if not sep or not key.strip() or not choices:
            raise UsageError(f"--grid {item!r}: expected KEY=VALUE,VALUE,..., e.g. "
                             "--grid train.lr=1e-5,3e-5")
        if key.strip() in grid:
            raise UsageError(f"--grid {key.strip()} is given twice: list all its values once")
        grid[key.strip()] = choices
    if not grid:
        raise UsageError("sweep: give at least one --grid KEY=VALUE,VALUE")
    return grid


def points_of(grid: Grid, draw: int | None, seed: int) -> list[dict[str, str]]:
    """Every combination of the grid, or `draw` of them drawn without replacement by `seed`."""
    combos = [dict(zip(grid, values, strict=True))
              for values in itertools.product(*grid.values())]
    if draw is not None:
        if not 0 < draw <= len(combos):
            raise UsageError(f"--random {draw}: the grid has {len(combos)} point(s)")
        combos = random.Random(seed).sample(combos, draw)
    return combos


def write_sweep(recipe_file: Path, base: list[str], grid: Grid, points: list[dict[str, str]],
                backend: BackendKind, sweep_dir: Path | None,
                max_parallel: int) -> tuple[SweepFolder, SweepRecord, list[Plan]]:
    """Every point's run folder, checked and planned, and what the backend needs to submit them
    as one array job (Slurm: its script). A bad point leaves nothing written."""
    name = safe_name(recipe_file.stem) + "-sweep"
    folder = SweepFolder(sweep_dir or Path("sweeps") / f"{name}-{_stamp()}")
    if folder.record.exists():
        raise UsageError(f"{folder.path} already holds a sweep: choose another --sweep-dir")
    record_points, plans, recipes = [], [], []
    group = [f"tracking.group='{folder.path.name}'"]
    first = load_recipe(recipe_file, base)
    parent = sweep_parent(first, recipe_name(first, recipe_file), folder.path.name)
    group += [f"tracking.parent_run='{parent}'"] if parent else []
    try:
        for index, settings in enumerate(points):
            sets = [*base, *(f"{k}={v}" for k, v in settings.items()), *group]
            recipe = load_recipe(recipe_file, sets)
            run = f"point-{index:03d}"
            console.print(f"{run}: {', '.join(f'{k}={v}' for k, v in settings.items())}",
                          markup=False)
            _, plan = write_new_run(recipe, recipe_file, backend, folder.path / run,
                                    resume=False, check_tracking=index == 0, quiet=True)
            record_points.append(SweepPoint(index=index, settings=settings, run=run))
            plans.append(plan)
            recipes.append(recipe)
        backend_for(backend).write_array(folder, list(zip(recipes, plans, strict=True)),
                                           max_parallel)
    except LaunchError:
        shutil.rmtree(folder.path, ignore_errors=True)
        raise
    record = SweepRecord(name=folder.path.name, recipe_file=str(recipe_file.resolve()),
                         base_settings=tuple(base), grid=grid, points=tuple(record_points),
                         backend=backend, max_parallel=max_parallel)
    record.write(folder.record)
    return folder, record, plans


def submit_sweep(folder: SweepFolder, record: SweepRecord, *, quiet: bool) -> None:
    """Submit the points as one array job of the backend (every point's job.json names its
    job); one that belongs to this process (local) is followed to its end, point by point."""
    backend = backend_for(record.backend)
    submitted = backend.submit_array(folder, folder.runs(record.points), record.max_parallel)
    console.print(f"submitted {submitted}", markup=False)
    if backend.attached:
        with stopping(lambda now: backend.cancel_array(folder, now=now)):
            _follow_points(folder, record, backend, quiet=quiet)


def _follow_points(folder: SweepFolder, record: SweepRecord, backend: Backend, *,
                   quiet: bool) -> None:
    """Each point's progress, then its metrics (or how it ended)."""
    points = {folder.point(point).path: point for point in record.points}
    for run, status in follow_array(folder, folder.runs(record.points), backend, quiet=quiet):
        point = points[run.path]
        summary = Summary.read_if_exists(run.summary)
        shown = metrics_text(summary.eval) if summary else status.shown()
        console.print(f"{point.run} ({_settings_text(point)}): {shown}", markup=False)
        if status.state is JobState.STOPPED:  # Ctrl-C or `sft-launch cancel`
            console.print(f"sweep stopped at {point.run}; the points after it did not run",
                          markup=False)
            return


def sweep_status(path: Path) -> list[tuple[str, str]] | None:
    """(point, "settings: state, metrics") rows of a sweep folder; None for any other folder."""
    folder = SweepFolder(path)
    if not folder.record.is_file():
        return None
    record = SweepRecord.read(folder.record)
    backend = backend_for(record.backend)
    array = backend.array_status(folder)
    rows = [("sweep", f"{folder.path}, {record.backend}" + (
        f", {array.job}" if array.state is not JobState.NOT_SUBMITTED else ""))]
    for point in record.points:
        run = folder.point(point)
        summary = Summary.read_if_exists(run.summary)
        rows.append((point.run, f"{_settings_text(point)}: {backend.status(run).state}"
                     + (f", {metrics_text(summary.eval)}" if summary else "")))
    return rows


def cancel_sweep(path: Path) -> str | None:
    """Stop every point of a sweep folder (None for any other folder): the running points
    checkpoint (where the backend can ask them to) and the others never start."""
    folder = SweepFolder(path)
    if not folder.record.is_file():
        return None
    record = SweepRecord.read(folder.record)
    asked = backend_for(record.backend).cancel_array(folder)
    return f"{asked}; sweep folder kept: {folder.path}"


def _settings_text(point: SweepPoint) -> str:
    return ", ".join(f"{key}={value}" for key, value in point.settings.items())


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
