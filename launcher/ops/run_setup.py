"""A recipe to a written run folder: the plan (or the resumed one), every check that can fail
before launch (inputs, data, the W&B key), then the files."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from rich.markup import escape

from launcher.contract.errors import RecipeError, UsageError
from launcher.contract.plan import LrRange, Plan
from launcher.contract.preflight import CHECKPOINTS_NEEDED, checkpoint_bytes
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import BackendKind, TrackerKind, TrackingMode
from launcher.data.splits import load_splits
from launcher.planner.gpus import gpus_on_this_machine
from launcher.planner.inputs import check_inputs
from launcher.planner.make import make_plan
from launcher.planner.resume import resumed_plan
from launcher.recipe.schema import Recipe
from launcher.render.run_folder import write_run_folder
from launcher.ui.progress import console


def write_new_run(recipe: Recipe, recipe_file: Path, backend: BackendKind, run_dir: Path | None,
                  *, resume: bool, check_tracking: bool, lr_find: LrRange | None = None,
                  quiet: bool = False) -> tuple[RunFolder, Plan]:
    """Plan, check and write the run folder (`runs/<name>-<UTC time>` unless `run_dir`); with
    `lr_find`, for an lr range test (no tracking, no checkpoints, no final model)."""
    if resume and run_dir is None:
        raise UsageError("--resume needs --run-dir: the run folder to continue")
    try:
        plan = make_plan(recipe, recipe_file=str(recipe_file), backend=backend,
                         gpus_here=gpus_on_this_machine() if backend is BackendKind.LOCAL else 0)
    except RecipeError as err:
        if resume and err.key.startswith("train.") and "batch" in err.key:
            raise RecipeError(err.file, err.key, err.problem, "a resumed run keeps its global "
                              "batch, so that its sample order continues exactly: resume on a "
                              "number of processes that divides it") from None
        raise
    if lr_find is not None:
        plan = dataclasses.replace(plan, lr_find=lr_find, tracking_mode=TrackingMode.DISABLED,
                                   trackers=())
    check_inputs(recipe, plan, str(recipe_file))
    rows = len(load_splits(recipe).train)
    if rows < plan.batch.global_size:
        raise UsageError(f"{recipe_file}: train.global_batch_size: {plan.batch.global_size} is "
                         f"more than the {rows} training rows; lower it or add data")
    check_tracker_clients(plan)
    if TrackerKind.WANDB in plan.trackers and plan.tracking_mode is TrackingMode.ONLINE \
            and check_tracking:
        check_wandb_key()
    kind = "-lr-find" if lr_find else ""
    folder_path = run_dir or Path("runs") / f"{plan.recipe_name}{kind}-{_utc_stamp()}"
    if resume:
        plan = resumed_plan(RunFolder(folder_path), plan)
    if backend is BackendKind.LOCAL and lr_find is None:
        check_room_here(RunFolder(folder_path), plan)
    folder = write_run_folder(folder_path, recipe, plan)
    if not quiet:
        _describe(folder, plan)
    return folder, plan


def check_room_here(folder: RunFolder, plan: Plan) -> None:
    """The preflight of a run on this machine, reduced to what can differ on one machine (the
    versions, the folder and the links are the same for every process): room for checkpoints,
    checked before the run folder is written. Less than one planned checkpoint stops the
    launch; less than two (the new one is written before the previous one goes) is said."""
    size = checkpoint_bytes(plan)
    existing = next(p for p in (folder.checkpoints, *folder.checkpoints.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    where = f"{free / 2**20:,.0f} MiB free where checkpoints go ({folder.checkpoints})"
    estimate = f"one checkpoint of this model is about {size / 2**20:,.0f} MiB"
    if size and free < size:
        raise UsageError(f"{where}: {estimate}; make room or choose another --run-dir")
    if size and free < CHECKPOINTS_NEEDED * size:
        console.print(f"warning: {where}: {estimate}, and a checkpoint is written before the "
                      "previous one is removed; a checkpoint that finds no room stops the run "
                      "cleanly (resumable)")


def _describe(folder: RunFolder, plan: Plan) -> None:
    console.print(f"run folder: [bold]{escape(str(folder.path))}[/bold]")
    console.print(f"plan: {plan.world_size} process(es) = {plan.nodes} node(s) x "
                  f"{plan.procs_per_node}, {plan.device}, {plan.precision}, {plan.strategy}; "
                  f"batch {plan.batch.global_size} = micro {plan.batch.micro} x accum "
                  f"{plan.batch.grad_accum} x world {plan.batch.world}"
                  + (f", micro-batches of <= {plan.batch.micro_tokens:,} tokens"
                     if plan.batch.micro_tokens else ""))
    if len(plan.world_history) > 1:
        spans = ", then ".join(f"{span.world_size} from step {span.from_step}"
                               for span in plan.world_history)
        console.print(f"world size over the run: {spans}")
    if TrackerKind.WANDB in plan.trackers and plan.tracking_mode is TrackingMode.OFFLINE:
        console.print("W&B: no WANDB_API_KEY, logging offline; upload later with "
                      f"`wandb sync {escape(str(folder.path))}/wandb/offline-run-*`")
    if TrackerKind.TENSORBOARD in plan.trackers:
        console.print(f"TensorBoard: `tensorboard --logdir {escape(str(folder.tensorboard))}`")


def check_tracker_clients(plan: Plan) -> None:
    """A tracker whose client is not installed stops the launch here, not on the nodes."""
    for kind in plan.trackers:
        if importlib.util.find_spec(kind.module) is None:
            raise UsageError(f"tracking.to names {kind.value!r} but its client is not "
                             f"installed: pip install 'sft-launch[{kind.value}]'")


def check_wandb_key() -> None:
    """A key W&B rejects stops the launch here (exit 2), not hours later on a compute node."""
    from launcher.trackers.wandb_key import KeyCheck, check_key

    key = os.environ.get("WANDB_API_KEY")
    if not key:
        console.print("W&B: tracking.mode is online but WANDB_API_KEY is not set: the workers "
                      "will log offline")
        return
    verdict, why = check_key(key)
    if verdict is KeyCheck.REJECTED:
        raise UsageError(f"W&B rejected WANDB_API_KEY ({why}): set a valid key, or "
                         "--set tracking.mode=offline")
    if verdict is KeyCheck.UNREACHABLE:
        console.print(f"W&B: not reachable from this machine ({escape(why)}); the workers try "
                      "and log offline if they cannot reach it either")
    else:
        console.print("W&B: the API key is valid")


def _utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
