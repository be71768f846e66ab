"""The trackers a run's plan names, started on rank 0 (none elsewhere)."""

from __future__ import annotations

from launcher.contract.events import EventLog
from launcher.contract.plan import Plan
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import TrackerKind
from launcher.recipe.schema import Recipe
from launcher.trackers.base import Tracker, Trackers


def start_trackers(recipe: Recipe, plan: Plan, folder: RunFolder, main_process: bool,
                   events: EventLog, resumed_step: int) -> Trackers:
    """Each tracker of `plan.trackers`, in that order; `resumed_step`: the checkpoint's step."""
    if not main_process:
        return Trackers()
    started: list[Tracker] = []
    for kind in plan.trackers:
        if kind is TrackerKind.WANDB:
            from launcher.trackers.wandb_run import start_wandb

            started.append(start_wandb(recipe, plan, folder, events))
        elif kind is TrackerKind.MLFLOW:
            from launcher.trackers.mlflow_run import start_mlflow

            started.append(start_mlflow(recipe, plan, folder, events))
        else:
            from launcher.trackers.tensorboard_run import start_tensorboard

            started.append(start_tensorboard(recipe, plan, folder, resumed_step))
    return Trackers(started)
