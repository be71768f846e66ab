"""Bring an MLflow server up to date with a run folder's own file store (`sft-launch sync`, and
every start of a run that has a server): what the server lacks is sent, nothing twice.

The file store in the run folder holds every metric the run logged; a server that was down for
a while, or never reachable, misses some. Sending only the (metric, step) pairs the server does
not hold makes a sync safe to repeat.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from launcher.contract.run_folder import RunFolder
from launcher.contract.tracking import MlflowRuns
from launcher.trackers.base import error_line

BATCH = 1000  # metrics per log_batch request (MLflow's limit)
PARAMS_BATCH = 100  # params per request (MLflow's limit)
PARAM_CHARS = 6000  # longest parameter value MLflow stores
# One failed request is enough to know a server is down: MLflow's own retries take minutes.
FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}


def fail_fast(timeout_s: int) -> None:
    """MLflow requests in this process give up after `timeout_s`, without retries."""
    for name, value in FAIL_FAST.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_s))


def bare_uri(uri: str) -> str:
    """`uri` without user or password: the only form written to a file or printed."""
    parts = urlsplit(uri)
    if not (parts.username or parts.password):
        return uri
    host = parts.hostname or ""
    return urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")))


def server_uri(uri: str) -> str:
    """`uri` without user or password, which go to MLflow's environment variables instead: so
    MLflow's own log lines (run links) never print them."""
    parts = urlsplit(uri)
    if parts.username:
        os.environ.setdefault("MLFLOW_TRACKING_USERNAME", unquote(parts.username))
    if parts.password:
        os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", unquote(parts.password))
    return bare_uri(uri)


def credentials() -> list[str | None]:
    """The MLflow secrets of this process's environment, to mask in messages."""
    return [os.environ.get(name) for name in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD")]


def local_client(folder: RunFolder) -> Any:
    """The folder's file store (MLflow 3 keeps it only on request: it is what we want here, a
    store that needs no database and is copied with the run folder)."""
    from mlflow import MlflowClient

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=folder.mlflow_store.resolve().as_uri())


def experiment_id(client: Any, name: str) -> str:
    """The experiment called `name`, made if missing (by another run at the same time too)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def create_parent(uri: str, experiment: str, name: str) -> str:
    """A parent run for a sweep's runs; its id."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(experiment_id(client, experiment), run_name=name,
                            tags={"sft_launch.sweep": name})
    return run.info.run_id


def sync(folder: RunFolder, runs: MlflowRuns, server: Any, uri: str) -> tuple[MlflowRuns, int]:
    """Send the server what it lacks of the folder's local run (made there if new); the
    updated record (written) and how many metric values were sent."""
    local = local_client(folder)
    mine = local.get_run(runs.local_run_id)
    if runs.server_run_id is None or runs.server_uri != bare_uri(uri):
        tags = {key: value for key, value in mine.data.tags.items()
                if not key.startswith("mlflow.") or key == "mlflow.runName"}
        if runs.parent_run_id:
            tags["mlflow.parentRunId"] = runs.parent_run_id
        made = server.create_run(experiment_id(server, runs.experiment),
                                 start_time=mine.info.start_time, tags=tags,
                                 run_name=mine.info.run_name)
        runs = MlflowRuns(experiment=runs.experiment, local_run_id=runs.local_run_id,
                          server_uri=bare_uri(uri), server_run_id=made.info.run_id,
                          parent_run_id=runs.parent_run_id)
        runs.write(folder.mlflow_run)
    theirs = server.get_run(runs.server_run_id)
    _send_params(server, runs.server_run_id, mine.data.params, theirs.data.params)
    sent = _send_metrics(local, server, runs, list(mine.data.metrics))
    _send_artifacts(mine.info.artifact_uri, server, runs.server_run_id)
    if mine.info.status != "RUNNING" and theirs.info.status != mine.info.status:
        server.set_terminated(runs.server_run_id, mine.info.status, mine.info.end_time)
    return runs, sent


def _send_params(server: Any, run_id: str, mine: dict[str, str],
                 theirs: dict[str, str]) -> None:
    from mlflow.entities import Param

    missing = [Param(key, value) for key, value in mine.items() if key not in theirs]
    for start in range(0, len(missing), PARAMS_BATCH):
        server.log_batch(run_id, params=missing[start:start + PARAMS_BATCH])


def _send_metrics(local: Any, server: Any, runs: MlflowRuns, keys: list[str]) -> int:
    missing = []
    for key in keys:
        held = {m.step for m in server.get_metric_history(runs.server_run_id, key)}
        missing += [m for m in local.get_metric_history(runs.local_run_id, key)
                    if m.step not in held]
    for start in range(0, len(missing), BATCH):
        server.log_batch(runs.server_run_id, metrics=missing[start:start + BATCH])
    return len(missing)


def _send_artifacts(artifact_uri: str, server: Any, run_id: str) -> None:
    root = Path(urlsplit(artifact_uri).path)
    held = {info.path for info in server.list_artifacts(run_id)}
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if path.name in held:
            continue
        if path.is_dir():  # a table with its pictures or sounds
            server.log_artifacts(run_id, str(path), path.name)
        else:
            server.log_artifact(run_id, str(path))


def truncate(value: str) -> str:
    """A parameter value MLflow stores (the longest are cut, marked)."""
    return value if len(value) <= PARAM_CHARS else value[:PARAM_CHARS - 3] + "..."


def sync_folder(folder: RunFolder, uri: str | None) -> tuple[MlflowRuns, int]:
    """`sft-launch sync RUN`: the folder's MLflow run onto `uri` (default: the server the run
    was meant for, or MLFLOW_TRACKING_URI)."""
    from launcher.contract.errors import LaunchError, UsageError

    runs = MlflowRuns.read_if_exists(folder.mlflow_run)
    if runs is None:
        raise UsageError(f"{folder.path} holds no MLflow run (its recipe's tracking.to has no "
                         "'mlflow')")
    target = uri or runs.server_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not target:
        raise UsageError("which MLflow server? pass --mlflow-uri URI or set MLFLOW_TRACKING_URI")
    fail_fast(30)
    from mlflow import MlflowClient

    target = server_uri(target)
    try:
        return sync(folder, runs, MlflowClient(tracking_uri=target), target)
    except Exception as err:
        if isinstance(err, LaunchError):
            raise
        raise LaunchError(f"MLflow at {bare_uri(target)}: "
                          f"{error_line(err, credentials())}") from None


def sweep_parent(recipe: Any, experiment: str, sweep_name: str) -> str | None:
    """The MLflow parent run of a sweep whose recipe logs to MLflow (None: no MLflow, no
    server, or a server this machine cannot reach: its runs then stand alone, as told)."""
    from launcher.contract.vocabulary import TrackerKind
    from launcher.ui.progress import console

    uri = recipe.tracking.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if TrackerKind.MLFLOW not in recipe.tracking.to or recipe.tracking.mode == "disabled" \
            or not uri:
        return None
    fail_fast(recipe.tracking.timeout_s)
    uri = server_uri(uri)
    try:
        parent = create_parent(uri, experiment, sweep_name)
    except Exception as err:
        console.print(f"MLflow: no parent run for the sweep ({bare_uri(uri)}: "
                      f"{type(err).__name__}); each point logs as a run of its own", markup=False)
        return None
    console.print(f"MLflow: parent run {parent} in experiment {experiment!r}", markup=False)
    return parent
