"""`job.json`: the backend's record of a run's submission, the same shape for every backend."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from launcher.contract.records import JsonRecord
from launcher.contract.vocabulary import BackendKind


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class LocalProcess:
    """The process group of a local run: its launcher's pid, which is also the group id."""

    host: str
    pid: int


class FinalState(StrEnum):
    """Why sft-launch ended a Slurm job instead of requeueing it once more."""

    NO_PROGRESS = "NO_PROGRESS"  # no newer checkpoint than at the previous (re)start
    REQUEUE_LIMIT = "REQUEUE_LIMIT"  # slurm.max_requeues reached


@dataclass(frozen=True)
class Requeue:
    """One requeue: the allocation that asked (its restart count), why, and from which step the
    next allocation resumes."""

    restart: int
    time: str
    signal: str
    checkpoint_step: int


@dataclass(frozen=True)
class JobRecord(JsonRecord):
    """What was submitted where; `submitted` is False when the backend refused it (`error`)."""

    backend: BackendKind
    submitted: bool
    time: str
    job_id: str | None = None  # Slurm's job id
    error: str | None = None
    cancelled_job_id: str | None = None  # accepted by Slurm, cancelled: it would never start
    process: LocalProcess | None = None  # local runs
    exit_code: int | None = None  # local runs: the launcher's exit code once it ended
    ended: str | None = None
    start_step: int = 0  # the newest checkpoint's step at submission
    requeues: tuple[Requeue, ...] = ()
    final_state: FinalState | None = None
    final_reason: str | None = None
