"""Weights & Biases from rank 0: one run per run folder, kept across restarts and resumes.

Tracking never stops training: when W&B cannot be reached online within `tracking.timeout_s`
(or rejects the key), the run logs offline into the run folder, says so once in the event log,
and gives the `wandb sync` command that uploads it later.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from launcher.contract.events import EventLog, TrackingOffline
from launcher.contract.plan import Plan
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import JobState, TrackingMode
from launcher.data.encode.masks import IGNORE
from launcher.data.encode.media import Box, Layer, Picture, Sound
from launcher.data.encode.preview import label_name
from launcher.recipe.schema import Recipe
from launcher.trackers.base import error_line

# W&B debug logging writes the API key into its log files, in plain text.
KEY_LEAKING_DEBUG = ("WANDB_DEBUG", "WANDB_CORE_DEBUG")
# W&B's names of a picture's layers of boxes and masks (it toggles each in its viewer).
WANDB_LAYERS = {Layer.TRUE: "ground_truth", Layer.PREDICTED: "predictions"}
IGNORED = "ignore"  # W&B's class name of a mask's IGNORE pixels


class WandbTracker:
    """One W&B run (online or offline) of a run folder."""

    def __init__(self, run: Any) -> None:
        self.run = run

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        """A W&B table; pictures and sounds as W&B images (their boxes and masks W&B's own)
        and audio."""
        import wandb

        def cell(value: Any) -> Any:
            if isinstance(value, Picture):
                return wandb_image(value)
            if isinstance(value, Sound):
                return wandb.Audio(value.samples, sample_rate=value.rate)
            return value

        data = [[cell(value) for value in row] for row in rows]
        self.run.log({key: wandb.Table(columns=columns, data=data)}, step=step)

    def finish(self, files: Sequence[Path], ended: JobState) -> None:
        for path in files:
            self.run.save(str(path), base_path=str(path.parent), policy="now")
        self.run.finish(exit_code=1 if ended is JobState.FAILED else 0)  # W&B: "failed"


def wandb_image(picture: Picture) -> Any:
    """A W&B image of the picture, each layer's boxes and mask as W&B's ("ground_truth",
    "predictions"), in pixels, with the class names (IGNORE pixels: the class "ignore")."""
    import wandb

    classes = dict(enumerate(picture.class_names))
    boxes = {WANDB_LAYERS[layer]: {"box_data": [_box(box, picture.class_names) for box in found],
                                   "class_labels": classes}
             for layer, found in picture.boxes.items()}
    masks = {WANDB_LAYERS[layer]: {"mask_data": mask, "class_labels": {**classes, IGNORE: IGNORED}}
             for layer, mask in picture.masks.items()}
    return wandb.Image(picture.pixels, boxes=boxes or None, masks=masks or None)


def _box(box: Box, names: tuple[str, ...]) -> dict[str, Any]:
    """One box as W&B takes it: its corners, its class and caption, and its score."""
    x0, y0, x1, y1 = box.corners
    found = {"position": {"minX": x0, "maxX": x1, "minY": y0, "maxY": y1}, "domain": "pixel",
             "class_id": box.class_id, "box_caption": label_name(list(names), box.class_id)}
    return found if box.score is None else {**found, "scores": {"score": box.score}}


def run_id(folder: RunFolder) -> str:
    """The W&B run id of this folder, made on its first start."""
    path = folder.tracking_id
    if path.is_file():
        return path.read_text().strip()
    new = uuid.uuid4().hex[:12]
    path.write_text(new + "\n")
    return new


def start_wandb(recipe: Recipe, plan: Plan, folder: RunFolder, events: EventLog) -> WandbTracker:
    """The W&B run of this folder (offline files under the run folder)."""
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")  # no telemetry flush at exit
    # Tables' media wait in the run folder for upload, not in the node's home folder.
    os.environ.setdefault("WANDB_DATA_DIR", str(folder.wandb / "data"))
    if os.environ.get("WANDB_API_KEY"):
        for name in KEY_LEAKING_DEBUG:
            os.environ.pop(name, None)
    import wandb

    tracking = recipe.tracking
    init: dict[str, Any] = {
        "project": tracking.project, "entity": tracking.entity,
        "name": tracking.run_name or folder.path.name, "tags": tracking.tags,
        "group": tracking.group,
        "dir": str(folder.path), "id": run_id(folder), "resume": "allow",
        "config": {"recipe": recipe.model_dump(mode="json"), "plan": plan.to_dict()},
    }
    if plan.tracking_mode is TrackingMode.ONLINE:
        try:
            return WandbTracker(wandb.init(mode="online", **init, settings=wandb.Settings(
                init_timeout=tracking.timeout_s)))
        except Exception as err:  # unreachable, a rejected key: never a reason to stop
            wandb.teardown()  # the failed run's id is free again only after this
            events.write(TrackingOffline(reason=_reason(err),
                                         sync_command=f"wandb sync {folder.wandb}/offline-run-*"))
    return WandbTracker(wandb.init(mode="offline", **init))


def _reason(err: Exception) -> str:
    """The first line of W&B's error, never with the key in it."""
    return f"could not use W&B online ({error_line(err, [os.environ.get('WANDB_API_KEY')])})"
