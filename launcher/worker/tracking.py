"""Weights & Biases from rank 0: the run's config, train and eval metrics, one run per folder."""

from __future__ import annotations

from typing import Any

from launcher.contract.plan import Plan
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import TrackingMode
from launcher.recipe.schema import Recipe


class Tracker:
    """Logs metrics to W&B on the main process; does nothing elsewhere or when disabled."""

    def __init__(self, run: Any = None) -> None:
        self.run = run

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def start_tracking(recipe: Recipe, plan: Plan, folder: RunFolder, main_process: bool) -> Tracker:
    """The W&B run of this folder on the main process (offline files under the run folder)."""
    if not main_process or plan.tracking_mode is TrackingMode.DISABLED:
        return Tracker()
    import wandb

    tracking = recipe.tracking
    run = wandb.init(
        project=tracking.project,
        entity=tracking.entity,
        name=tracking.run_name or folder.path.name,
        tags=tracking.tags,
        dir=str(folder.path),
        mode=plan.tracking_mode.value,
        config={"recipe": recipe.model_dump(mode="json"), "plan": plan.to_dict()},
    )
    return Tracker(run)
