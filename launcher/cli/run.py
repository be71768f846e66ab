"""Commands that run and follow a run folder: launch (the default), status, logs, cancel, sync."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from launcher.cli.app import (
    BackendOpt,
    NewRunDirOpt,
    NodesOpt,
    PpnOpt,
    RecipeArg,
    RunDirArg,
    SetOpt,
    app,
    choose_backend,
    recipe_with_cli,
)
from launcher.ui.progress import console

PANEL = "Run and follow"


@app.command(rich_help_panel=PANEL)
def launch(
    recipe_file: RecipeArg,
    nodes: NodesOpt = None,
    procs_per_node: PpnOpt = None,
    backend: BackendOpt = "auto",
    set_: SetOpt = None,
    run_dir: NewRunDirOpt = None,
    dry_run: Annotated[bool, typer.Option(help="Write the run folder, do not launch.")] = False,
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --run-dir from its newest checkpoint.")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    wait: Annotated[
        bool, typer.Option(help="Slurm: follow the job to its end and exit with its result.")
    ] = False,
) -> None:
    """Validate, plan, write the run folder and launch (the default command)."""
    from launcher.backends import backend_for
    from launcher.ops.jobs import launch as launch_job
    from launcher.ops.run_setup import write_new_run

    recipe = recipe_with_cli(recipe_file, set_, nodes, procs_per_node)
    chosen = choose_backend(backend, recipe, dry_run)
    folder, plan = write_new_run(recipe, recipe_file, chosen, run_dir, resume=resume,
                                 check_tracking=not dry_run)
    if dry_run:
        console.print("dry run: nothing launched")
        return
    launch_job(folder, backend_for(plan.backend), resume=resume, wait=wait, quiet=quiet)


@app.command(rich_help_panel=PANEL)
def status(
    run_dir: Annotated[
        Path | None, typer.Argument(help="The run folder (default: the newest under runs/).")
    ] = None,
) -> None:
    """State, elapsed time, nodes, last step and loss, eval metrics of a run (or of every
    point of a sweep folder)."""
    from launcher.ops.jobs import find_run
    from launcher.ops.jobs import status as run_status
    from launcher.ops.sweep import sweep_status

    if run_dir is not None and (rows := sweep_status(run_dir)) is not None:
        for point, state in rows:
            print(f"{point + ':':<10} {state}")
        return
    for label, value in run_status(find_run(run_dir)):
        print(f"{label + ':':<9} {value}")


@app.command(rich_help_panel=PANEL)
def logs(
    run_dir: RunDirArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the run "
                                         "ends.")] = False,
    node: Annotated[int | None, typer.Option(help="Only node K's lines (0-based).")] = None,
) -> None:
    """Print a run's output (Slurm: logs/slurm-<job>.out; local: logs/launch.log)."""
    from launcher.ops.jobs import find_run
    from launcher.ops.jobs import logs as run_logs

    run_logs(find_run(run_dir), follow=follow, node=node)


@app.command(rich_help_panel=PANEL)
def cancel(run_dir: RunDirArg) -> None:
    """Stop a run (Slurm: scancel; local: SIGTERM to its processes, which checkpoint first), or
    every point of a sweep folder; the folders stay."""
    from launcher.ops.jobs import cancel as cancel_run
    from launcher.ops.jobs import find_run
    from launcher.ops.sweep import cancel_sweep

    if (stopped := cancel_sweep(run_dir)) is not None:
        console.print(stopped, markup=False)
        return
    folder = find_run(run_dir)
    console.print(f"job state: {cancel_run(folder).state}; run folder kept: {folder.path}",
                  markup=False)




@app.command(rich_help_panel=PANEL)
def sync(
    run_dir: RunDirArg,
    mlflow_uri: Annotated[str | None, typer.Option(
        "--mlflow-uri", help="Server to send to (default: the run's, or MLFLOW_TRACKING_URI).",
        show_default=False)] = None,
) -> None:
    """Send an MLflow server what a run logged while it could not reach it (every metric is
    kept in RUN/mlflow). Safe to repeat: nothing is sent twice. W&B: `wandb sync`."""
    from launcher.ops.jobs import find_run
    from launcher.trackers.mlflow_sync import bare_uri, sync_folder

    runs, sent = sync_folder(find_run(run_dir), mlflow_uri)
    console.print(f"MLflow: {sent} metric value(s) sent to {bare_uri(runs.server_uri or '')}, "
                  f"run {runs.server_run_id} of experiment {runs.experiment!r}", markup=False)
