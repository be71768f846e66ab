"""Commands that look before a run: plan (the batch arithmetic, the memory plan of every strategy
and the choice), lr-find and schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from launcher.cli.app import (
    BackendOpt,
    NewRunDirOpt,
    NodesOpt,
    PpnOpt,
    RecipeArg,
    SetOpt,
    app,
    choose_backend,
    recipe_with_cli,
)
from launcher.contract.errors import UsageError
from launcher.contract.vocabulary import BackendKind
from launcher.recipe.schema import Recipe
from launcher.ui.progress import console

PANEL = "Before a run"


@app.command("plan", rich_help_panel=PANEL)
def plan_command(
    recipe_file: RecipeArg,
    nodes: NodesOpt = None,
    procs_per_node: PpnOpt = None,
    device_memory: Annotated[
        str | None, typer.Option(help="Memory of one device, e.g. 80GiB (default: detected).")
    ] = None,
    set_: SetOpt = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object per strategy (bytes per rank, peak_bytes the "
        "highest they go) instead of the table.")] = False,
) -> None:
    """Show the plan: the batch arithmetic, bytes per device for every strategy, and the
    strategy chosen (what auto picks).

    Reads the model's config.json only (no weights), so it sizes a 70B model on a laptop.
    """
    from launcher.planner.make import make_plan
    from launcher.planner.report import plan_report

    extra = list(set_ or []) + ([f"distributed.device_memory='{device_memory}'"]
                                if device_memory else [])
    recipe = recipe_with_cli(recipe_file, extra, nodes, procs_per_node)
    on_cluster = recipe.distributed.nodes > 1 or recipe.slurm.gpus_per_node > 0
    backend = BackendKind.SLURM if on_cluster else BackendKind.LOCAL
    plan = make_plan(recipe, recipe_file=str(recipe_file), backend=backend, gpus_here=0)
    if as_json:
        estimates = plan.memory.estimates if plan.memory is not None else ()
        print(json.dumps([{"label": e.label, **e.to_dict()} for e in estimates], indent=2))
        return
    console.print(plan_report(plan, recipe))


@app.command(rich_help_panel=PANEL)
def schema() -> None:
    """Print the recipe's JSON schema (for editor completion and validation)."""
    print(json.dumps(Recipe.model_json_schema(), indent=2))




LR_FIND_HELP = (
    "Find a learning rate: the LR range test on the recipe's real data, model and strategy.\n\n"
    "Runs up to --steps optimizer steps with the learning rate rising log-uniformly from --min "
    "to --max (here or on Slurm, as a launch would), and stops once the smoothed loss "
    "diverges. Suggests train.lr where the loss falls fastest (the steepest slope of a line "
    "fitted through 11 neighbouring steps; or the minimum's lr / 10) and writes lr_find.json "
    "and lr_find.png into the run folder.\n\n"
    "Example: sft-launch lr-find recipes/quickstart.toml --steps 60"
)


@app.command("lr-find", rich_help_panel=PANEL, help=LR_FIND_HELP)
def lr_find(
    recipe_file: RecipeArg,
    min_lr: Annotated[float, typer.Option("--min", help="Learning rate of the first step.")] = 1e-7,
    max_lr: Annotated[float, typer.Option("--max", help="Learning rate of the last step.")] = 1.0,
    steps: Annotated[int, typer.Option(help="Optimizer steps of the ramp, at most.")] = 100,
    nodes: NodesOpt = None,
    procs_per_node: PpnOpt = None,
    backend: BackendOpt = "auto",
    set_: SetOpt = None,
    run_dir: Annotated[Path | None, typer.Option(
        help="Run folder (default: runs/<name>-lr-find-<UTC time>).")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """The LR range test (see LR_FIND_HELP)."""
    from launcher.backends import backend_for
    from launcher.contract.plan import LrRange
    from launcher.contract.vocabulary import JobState
    from launcher.ops.lr_find import conclude
    from launcher.ops.run_setup import write_new_run
    from launcher.ui.progress import report_end
    from launcher.ui.waiting import follow_job, stopping_job

    if not 0 < min_lr < max_lr or steps < 3:
        raise UsageError("lr-find: needs 0 < --min < --max and --steps >= 3")
    recipe = recipe_with_cli(recipe_file, set_, nodes, procs_per_node)
    chosen = choose_backend(backend, recipe, dry_run=False)
    folder, plan = write_new_run(recipe, recipe_file, chosen, run_dir, resume=False,
                                 check_tracking=False, lr_find=LrRange(min_lr, max_lr, steps))
    runner = backend_for(plan.backend)
    runner.submit(folder, resume=False)
    with stopping_job(folder, runner):
        final = follow_job(folder, runner, quiet=quiet)
    if final.state is not JobState.COMPLETED or not folder.lr_curve.is_file():
        report_end(folder, runner.logs(folder).path, final.ended() + ", no lr curve")
    result = conclude(folder, f"{plan.recipe_name}: lr range test")
    console.print(f"suggested train.lr = {result.suggested_lr:.3g} ({result.method} of the "
                  f"loss, {len(result.lrs)} steps); curve in {folder.lr_find}"
                  f" and {folder.lr_find.with_suffix('.png')}")
    console.print(f"use it: sft-launch {recipe_file} --set train.lr={result.suggested_lr:.3g}")


DOCTOR_HELP = (
    "Check the nodes before a run: plan the recipe, write a run folder and run only the "
    "preflight (no model is loaded).\n\n"
    "Every rank reports its host, Python/torch/transformers/accelerate/deepspeed versions, "
    "whether it sees the same run folder, free disk for checkpoints and the cache, visible "
    "GPUs; then an all-reduce and point-to-point transfers are timed. A node that fails a "
    "check, or whose bandwidth is below a third of the nodes' median, is named.\n\n"
    "Here: the processes of launch.sh (logs/preflight.log); on Slurm: preflight.sbatch, "
    "submitted with sbatch --wait. The result: logs/preflight.json.\n\n"
    "Examples:\n\n"
    "  sft-launch doctor recipes/quickstart.toml --procs-per-node 2\n\n"
    "  sft-launch doctor recipe.toml --nodes 4 --procs-per-node 8   # Slurm\n\n"
    "Exit codes: 0 every node healthy, 2 a node is bad (or a bad recipe), 1 the preflight "
    "itself failed."
)


@app.command("doctor", rich_help_panel=PANEL, help=DOCTOR_HELP)
def doctor_command(
    recipe_file: RecipeArg,
    nodes: NodesOpt = None,
    procs_per_node: PpnOpt = None,
    backend: BackendOpt = "auto",
    set_: SetOpt = None,
    run_dir: NewRunDirOpt = None,
) -> None:
    from launcher.contract.errors import LaunchError
    from launcher.contract.vocabulary import ExitCode
    from launcher.ops.doctor import doctor
    from launcher.ops.run_setup import write_new_run

    recipe = recipe_with_cli(recipe_file, set_, nodes, procs_per_node)
    chosen = choose_backend(backend, recipe, dry_run=False)
    folder, plan = write_new_run(recipe, recipe_file, chosen, run_dir, resume=False,
                                 check_tracking=False)
    result, code = doctor(recipe, plan, folder)
    if result is None:
        raise LaunchError(f"the preflight wrote no result (exit code {code}); see "
                          f"{folder.preflight_log if chosen is BackendKind.LOCAL else 'logs/'}")
    console.print("\n".join(result.lines()), markup=False, highlight=False)
    if not result.healthy:
        raise typer.Exit(ExitCode.USAGE)
