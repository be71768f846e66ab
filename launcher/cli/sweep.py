"""Commands for many runs at once: sweep (a grid of settings, one job array on Slurm) and
leaderboard (its points, best first)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from launcher.cli.app import (
    BackendOpt,
    NodesOpt,
    PpnOpt,
    RecipeArg,
    SetOpt,
    app,
    choose_backend,
    recipe_with_cli,
)
from launcher.ui.progress import console

PANEL = "Sweeps"
SWEEP_HELP = (
    "Run a recipe over a grid of settings: one run folder per point under a sweep folder.\n\n"
    "On Slurm the points are one job array (`--array=0-N%M`), each task running its own "
    "resolved recipe; here they run one after another. Every run is in the W&B group of the "
    "sweep. Then `sft-launch leaderboard SWEEP_DIR` ranks them.\n\n"
    "Example: sft-launch sweep recipes/quickstart.toml --grid train.lr=1e-4,2e-4 "
    "--grid train.seed=1,2 --max-parallel 2"
)


@app.command(rich_help_panel=PANEL, help=SWEEP_HELP)
def sweep(
    recipe_file: RecipeArg,
    grid: Annotated[list[str], typer.Option(
        "--grid", help="KEY=VALUE,VALUE,... to sweep (repeatable; values are TOML).")],
    random_points: Annotated[int | None, typer.Option(
        "--random", help="Run K points drawn from the grid instead of all of them.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of --random.")] = 0,
    max_parallel: Annotated[int, typer.Option(
        help="Slurm: tasks of the job array running at once.")] = 4,
    nodes: NodesOpt = None,
    procs_per_node: PpnOpt = None,
    backend: BackendOpt = "auto",
    set_: SetOpt = None,
    sweep_dir: Annotated[Path | None, typer.Option(
        help="Sweep folder (default: sweeps/<name>-sweep-<UTC time>).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Write the folders, launch nothing.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """A grid of runs (see SWEEP_HELP)."""
    from launcher.contract.errors import UsageError
    from launcher.ops.sweep import parse_grid, points_of, submit_sweep, write_sweep

    if max_parallel < 1:
        raise UsageError("--max-parallel must be at least 1")
    swept = parse_grid(grid)
    base = list(set_ or [])
    recipe = recipe_with_cli(recipe_file, base, nodes, procs_per_node)  # the sweep's own checks
    chosen = choose_backend(backend, recipe, dry_run)
    base += [f"distributed.{key}={value}" for key, value in
             (("nodes", nodes), ("procs_per_node", procs_per_node)) if value is not None]
    folder, record, _ = write_sweep(recipe_file, base, swept,
                                    points_of(swept, random_points, seed), chosen, sweep_dir,
                                    max_parallel)
    console.print(f"sweep folder: {folder.path} ({len(record.points)} point(s))", markup=False)
    if dry_run:
        console.print("dry run: nothing launched")
        return
    submit_sweep(folder, record, quiet=quiet)
    console.print(f"rank the points: sft-launch leaderboard {folder.path}", markup=False)


@app.command(rich_help_panel=PANEL)
def leaderboard(
    sweep_dir: Annotated[Path, typer.Argument(help="A sweep folder.", show_default=False)],
    metric: Annotated[str | None, typer.Option(
        help="Eval metric to rank by, e.g. accuracy, f1, loss (default: the task's).")] = None,
) -> None:
    """Every point of a sweep with its settings, metric, steps, time and state, best first;
    writes best.toml (the winner's resolved recipe) and sweep.png."""
    from launcher.contract.errors import UsageError
    from launcher.contract.sweep import SweepFolder
    from launcher.ops.leaderboard import publish, rank, table

    folder = SweepFolder(sweep_dir)
    if not folder.record.is_file():
        raise UsageError(f"{sweep_dir} is not a sweep folder (no sweep.json)")
    board = rank(folder, metric)
    console.print(table(folder, board))
    publish(folder, board)
    if folder.best.exists():
        console.print(f"best: {board.entries[0].point.run}; its recipe: {folder.best}; "
                      f"picture: {folder.picture}", markup=False)
    else:
        console.print("no point has finished with the metric yet", markup=False)
