"""Which tracker runs a run folder logs to, kept across restarts, requeues and resumes."""

from __future__ import annotations

from dataclasses import dataclass

from launcher.contract.records import JsonRecord


@dataclass(frozen=True)
class MlflowRuns(JsonRecord):
    """`logs/mlflow-run.json`: the run in the folder's own file store (which holds every metric)
    and, once a server took it, the run on that server (its URI never holds credentials)."""

    experiment: str
    local_run_id: str
    server_uri: str | None = None
    server_run_id: str | None = None
    parent_run_id: str | None = None
