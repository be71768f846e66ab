"""Sweeps: a grid (or a random sample of it) of `--set` values over one recipe, with one run
folder per point under a sweep folder; on Slurm one job array, here one run after another."""

from __future__ import annotations

import dataclasses
import itertools
import os
import random
import shutil
import signal
import socket
from datetime import UTC, datetime
from pathlib import Path

from launcher.backends import backend_for
from launcher.backends.slurm import Refused, sbatch
from launcher.backends.slurm_commands import scancel
from launcher.contract.job import JobRecord, LocalProcess, utc_now
from launcher.contract.plan import Plan
from launcher.contract.reports import Summary
from launcher.contract.sweep import SweepFolder, SweepPoint, SweepRecord
from launcher.contract.vocabulary import BackendKind
from launcher.errors import LaunchError, UsageError
from launcher.plan.plan import recipe_name, safe_name
from launcher.progress import console, metrics_text
from launcher.recipe.load import load_recipe
from launcher.render.sbatch import render_sweep_script
from launcher.run_setup import write_new_run
from launcher.trackers.mlflow_sync import sweep_parent

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


def points_of(grid: Grid, sample: int | None, seed: int) -> list[dict[str, str]]:
    """Every combination of the grid, or `sample` of them drawn without replacement by `seed`."""
    combos = [dict(zip(grid, values, strict=True))
              for values in itertools.product(*grid.values())]
    if sample is not None:
        if not 0 < sample <= len(combos):
            raise UsageError(f"--random {sample}: the grid has {len(combos)} point(s)")
        combos = random.Random(seed).sample(combos, sample)
    return combos


def write_sweep(recipe_file: Path, base: list[str], grid: Grid, points: list[dict[str, str]],
                backend: BackendKind, sweep_dir: Path | None,
                max_parallel: int) -> tuple[SweepFolder, SweepRecord, list[Plan]]:
    """Every point's run folder, checked and planned; on Slurm the job array's script. A bad
    point leaves nothing written."""
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
        if backend is BackendKind.SLURM:
            _same_resources(recipes, plans)
            folder.job_script.write_text(render_sweep_script(
                recipes[0], plans[0], folder.path.resolve(), len(points), max_parallel,
                folder.path.name))
    except LaunchError:
        shutil.rmtree(folder.path, ignore_errors=True)
        raise
    record = SweepRecord(name=folder.path.name, recipe_file=str(recipe_file.resolve()),
                         base_settings=tuple(base), grid=grid, points=tuple(record_points),
                         backend=backend, max_parallel=max_parallel)
    record.write(folder.record)
    return folder, record, plans


def _same_resources(recipes: list, plans: list[Plan]) -> None:
    """One job array gives every task the same resources."""
    first = (plans[0].nodes, plans[0].procs_per_node, recipes[0].slurm)
    for recipe, plan in zip(recipes, plans, strict=True):
        if (plan.nodes, plan.procs_per_node, recipe.slurm) != first:
            raise UsageError("the points of a Slurm sweep run as one job array, so they must "
                             "share nodes, processes per node and [slurm] settings; sweep those "
                             "with separate launches")


def submit_sweep(folder: SweepFolder, record: SweepRecord, *, quiet: bool) -> SweepRecord:
    """Slurm: submit the job array (every point's job.json names its task). Here: run the points
    one after another, each to its end."""
    if record.backend is BackendKind.SLURM:
        try:
            array = sbatch(folder.path, folder.job_script.name, [])
        except Refused as err:
            raise UsageError(f"{err.message}\n  the sweep folder is kept, not submitted: "
                             f"{folder.path}") from None
        for point in record.points:
            JobRecord(backend=BackendKind.SLURM, submitted=True, time=utc_now(),
                      job_id=f"{array}_{point.index}").write(folder.point(point).job)
        record = dataclasses.replace(record, job_id=array)
        record.write(folder.record)
        console.print(f"submitted job array {array}: {len(record.points)} task(s), at most "
                      f"{record.max_parallel} at a time")
        return record
    record = dataclasses.replace(record, runner=LocalProcess(host=socket.gethostname(),
                                                             pid=os.getpid()))
    record.write(folder.record)
    for point in record.points:
        run = folder.point(point)
        backend = backend_for(BackendKind.LOCAL)
        backend.submit(run, resume=False)
        code = backend.wait(run, quiet=quiet)
        summary = Summary.read_if_exists(run.summary)
        shown = metrics_text(summary.eval) if summary else f"failed (exit code {code})"
        console.print(f"{point.run} ({_settings_text(point)}): {shown}", markup=False)
        if backend.status(run).state == "STOPPED":  # Ctrl-C or `sft-launch cancel`
            console.print(f"sweep stopped at {point.run}; the points after it did not run",
                          markup=False)
            break
    return record


def sweep_status(path: Path) -> list[tuple[str, str]] | None:
    """(point, "settings: state, metrics") rows of a sweep folder; None for any other folder."""
    folder = SweepFolder(path)
    if not folder.record.is_file():
        return None
    record = SweepRecord.read(folder.record)
    rows = [("sweep", f"{folder.path}, {record.backend}" + (
        f", job array {record.job_id}" if record.job_id else ""))]
    backend = backend_for(record.backend)
    for point in record.points:
        run = folder.point(point)
        summary = Summary.read_if_exists(run.summary)
        rows.append((point.run, f"{_settings_text(point)}: {backend.status(run).state}"
                     + (f", {metrics_text(summary.eval)}" if summary else "")))
    return rows


def cancel_sweep(path: Path) -> str | None:
    """Stop every point of a sweep folder (None for any other folder): Slurm cancels the job
    array; here the running point checkpoints and the points after it do not start."""
    folder = SweepFolder(path)
    if not folder.record.is_file():
        return None
    record = SweepRecord.read(folder.record)
    if record.backend is BackendKind.SLURM and record.job_id:
        scancel(record.job_id)
        return f"cancelled job array {record.job_id}; sweep folder kept: {folder.path}"
    runner = record.runner
    if runner is None:
        raise UsageError(f"{folder.path}: the sweep was never started")
    if runner.host != socket.gethostname():
        raise UsageError(f"{folder.path}: the sweep runs on {runner.host}: cancel it there")
    try:
        os.kill(runner.pid, signal.SIGTERM)
    except ProcessLookupError:
        raise UsageError(f"{folder.path}: its sweep is not running") from None
    return f"stopping the sweep (pid {runner.pid}); sweep folder kept: {folder.path}"


def _settings_text(point: SweepPoint) -> str:
    return ", ".join(f"{key}={value}" for key, value in point.settings.items())


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
