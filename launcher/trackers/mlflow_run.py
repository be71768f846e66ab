"""MLflow from rank 0: one run per run folder, kept across restarts, requeues and resumes.

Every metric goes to the folder's own file store first (`RUN/mlflow`, browsable with
`mlflow ui --backend-store-uri RUN/mlflow`), then to the tracking server when there is one. A
server that cannot be reached at the start, or stops answering, is left alone for the rest of
the start (training never waits on it twice) and `sft-launch sync RUN` sends what it missed.
A resumed run does not log again the steps it had logged before it stopped.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from launcher.contract.events import EventLog, TrackingOffline
from launcher.contract.plan import Plan
from launcher.contract.run_folder import RunFolder
from launcher.contract.tracking import MlflowRuns
from launcher.contract.vocabulary import JobState
from launcher.data.encode.media import Picture, Sound
from launcher.recipe.schema import Recipe
from launcher.trackers.base import error_line, flat_params
from launcher.trackers.mlflow_sync import (
    PARAMS_BATCH,
    bare_uri,
    credentials,
    experiment_id,
    fail_fast,
    local_client,
    server_uri,
    sync,
    truncate,
)

# How a run's end reads in MLflow (KILLED: stopped after a checkpoint, --resume continues it).
MLFLOW_STATUS = {JobState.COMPLETED: "FINISHED", JobState.STOPPED: "KILLED",
                 JobState.FAILED: "FAILED"}


class MlflowTracker:
    """The folder's local MLflow run and, while it answers, the same run on the server."""

    def __init__(self, local: Any, runs: MlflowRuns, logged: dict[str, int],
                 folder: RunFolder, events: EventLog) -> None:
        self.local, self.runs, self.logged = local, runs, logged
        self.folder, self.events = folder, events
        self.server: Any = None

    def connect(self, uri: str) -> None:
        """Catch the server up with the local run, then stream to it; a failure is told once."""
        from mlflow import MlflowClient

        try:
            server = MlflowClient(tracking_uri=uri)
            self.runs, _ = sync(self.folder, self.runs, server, uri)
            server.update_run(self.runs.server_run_id, status="RUNNING")
            self.server = server
        except Exception as err:  # unreachable, refused, a bad token: never a reason to stop
            self._lost(err)

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        fresh = [Metric(key, value, now, step) for key, value in metrics.items()
                 if step > self.logged.get(key, -1)]
        if not fresh:
            return
        self.local.log_batch(self.runs.local_run_id, metrics=fresh)
        for metric in fresh:
            self.logged[metric.key] = step
        self._to_server(lambda server, run_id: server.log_batch(run_id, metrics=fresh))

    def table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        """`KEY-step-N/table.json`, with each picture or sound as a file beside it."""
        folder = f"{key.replace('/', '-')}-step-{step}"
        with tempfile.TemporaryDirectory() as scratch:
            cells = [[_saved(value, Path(scratch), number) for value in row]
                     for number, row in enumerate(rows)]
            (Path(scratch) / "table.json").write_text(json.dumps(
                {"columns": columns, "rows": cells}, default=str))
            self.local.log_artifacts(self.runs.local_run_id, scratch, folder)
            self._to_server(lambda server, run_id: server.log_artifacts(run_id, scratch, folder))

    def finish(self, files: Sequence[Path], ended: JobState) -> None:
        status = MLFLOW_STATUS[ended]
        for path in files:
            self.local.log_artifact(self.runs.local_run_id, str(path))
            self._to_server(lambda server, run_id, p=path: server.log_artifact(run_id, str(p)))
        self.local.set_terminated(self.runs.local_run_id, status)
        self._to_server(lambda server, run_id: server.set_terminated(run_id, status))

    def _to_server(self, call: Any) -> None:
        if self.server is None:
            return
        try:
            call(self.server, self.runs.server_run_id)
        except Exception as err:
            self.server = None
            self._lost(err)

    def _lost(self, err: Exception) -> None:
        self.events.write(TrackingOffline(
            tracker="MLflow", reason=_reason(err),
            sync_command=f"sft-launch sync {self.folder.path}"))


def start_mlflow(recipe: Recipe, plan: Plan, folder: RunFolder,
                 events: EventLog) -> MlflowTracker:
    """This folder's MLflow run (made on its first start), connected to the server if any."""
    fail_fast(recipe.tracking.timeout_s)
    local = local_client(folder)
    runs = MlflowRuns.read_if_exists(folder.mlflow_run)
    uri = recipe.tracking.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")
    uri = server_uri(uri) if uri else None
    if runs is None:
        made = local.create_run(experiment_id(local, plan.recipe_name),
                                run_name=recipe.tracking.run_name or folder.path.name,
                                tags={"sft_launch.run_folder": str(folder.path.resolve())})
        params = [_param(key, value) for key, value in flat_params(recipe, plan).items()]
        for start in range(0, len(params), PARAMS_BATCH):
            local.log_batch(made.info.run_id, params=params[start:start + PARAMS_BATCH])
        runs = MlflowRuns(experiment=plan.recipe_name, local_run_id=made.info.run_id,
                          server_uri=bare_uri(uri) if uri else None,
                          parent_run_id=recipe.tracking.parent_run)
        runs.write(folder.mlflow_run)
    else:
        local.update_run(runs.local_run_id, status="RUNNING")
    tracker = MlflowTracker(local, runs, _last_steps(local, runs.local_run_id), folder, events)
    if uri:
        tracker.connect(uri)
    else:
        events.message(
            f"MLflow: no tracking server (tracking.mlflow_uri or MLFLOW_TRACKING_URI): logging "
            f"to {folder.mlflow_store}; browse with `mlflow ui --backend-store-uri "
            f"{folder.mlflow_store}`, upload with `sft-launch sync {folder.path} --mlflow-uri "
            f"URI`")
    return tracker


def _saved(value: Any, folder: Path, number: int) -> Any:
    """A table cell: a picture (its boxes and masks drawn in, true beside predicted) or a
    sound written to `folder` (its file name in the cell)."""
    if isinstance(value, Picture):
        from PIL import Image

        from launcher.data.encode.annotated import flattened

        Image.fromarray(flattened(value)).save(folder / f"{number}.png")
        return f"{number}.png"
    if isinstance(value, Sound):
        import soundfile

        soundfile.write(folder / f"{number}.wav", value.samples, value.rate)
        return f"{number}.wav"
    return value


def _param(key: str, value: str) -> Any:
    from mlflow.entities import Param

    return Param(key, truncate(value))


def _last_steps(local: Any, run_id: str) -> dict[str, int]:
    """The last step each metric was logged at, by earlier starts of this run."""
    keys = local.get_run(run_id).data.metrics
    return {key: max(m.step for m in local.get_metric_history(run_id, key)) for key in keys}


def _reason(err: Exception) -> str:
    """The first line of MLflow's error, without any credential in it."""
    return f"could not use the MLflow server ({error_line(err, credentials())})"
