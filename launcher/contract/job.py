"""`job.json`: the backend's record of a run's submission, the same shape for every backend."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

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
    """Why sft-launch ended a job instead of requeueing or restarting it once more."""

    NO_PROGRESS = "NO_PROGRESS"  # no newer checkpoint than at the previous (re)start
    REQUEUE_LIMIT = "REQUEUE_LIMIT"  # slurm.max_requeues reached
    RESTART_LIMIT = "RESTART_LIMIT"  # train.max_restarts reached
    PREFLIGHT = "PREFLIGHT"  # the preflight named a bad node (or a node never joined): no training


# How the survivors of a dead worker end, so the least telling of causes: an exception (their
# collective failed: exit code 1), or SIGTERM from the launcher stopping the rest (a stop
# request, also TERM, ends a worker with exit code 75 instead).
VICTIM_EXIT_CODE, VICTIM_SIGNAL = 1, "SIGTERM"


@dataclass(frozen=True)
class WorkerDeath:
    """A worker process that ended otherwise than asked: its global rank, host and pid, and
    how (`signal`: the name of the signal that killed it, else its exit code), when its node's
    supervisor saw it (seconds since the epoch)."""

    rank: int
    host: str
    pid: int
    exit_code: int
    signal: str | None
    time: float

    def describe(self) -> str:
        how = (f"was killed by {self.signal}" if self.signal
               else f"exited with code {self.exit_code}")
        return f"rank {self.rank} (host {self.host}, pid {self.pid}) {how}"


def first_death(deaths: tuple[WorkerDeath, ...]) -> WorkerDeath:
    """The death that most likely caused the others: one unlike a survivor's (see above)
    before those, then the earliest, then the lowest rank."""
    return min(deaths, key=lambda d: (d.signal == VICTIM_SIGNAL or (
        d.signal is None and d.exit_code == VICTIM_EXIT_CODE), d.time, d.rank))


@dataclass(frozen=True)
class Restart:
    """One restart in the same allocation: when, after which deaths, from which checkpoint."""

    attempt: int  # 1 for the first restart
    time: str
    checkpoint_step: int
    cause: WorkerDeath


@dataclass(frozen=True)
class Requeue:
    """One requeue: the allocation that asked (its restart count), why, and from which step the
    next allocation resumes."""

    restart: int
    time: str
    signal: str  # what stopped the allocation: USR1, TERM; NODE_FAIL (Slurm's own requeue)
    checkpoint_step: int
    cause: str = ""  # Slurm's own requeue: the node(s) lost and what Slurm says of them


@dataclass(frozen=True)
class Allocation:
    """One start of a Slurm job (each requeue starts it again): its restart count, when, and
    on which nodes."""

    restart: int
    time: str
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class AttemptVerdict(JsonRecord):
    """What node 0's supervisor decided after an attempt's workers died, for every node:
    restart them, or end (as `code`), or leave the node `exclude` behind (its workers died
    first twice: the job is submitted again without it)."""

    attempt: int
    restart: bool
    code: int
    exclude: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class Exclusion:
    """A job submitted again without nodes: those the preflight named (slurm.exclude_bad_nodes)
    or one whose workers died first twice; which job left them behind, which nodes, why."""

    job_id: str
    nodes: tuple[str, ...]
    reason: str
    time: str

    def describe(self) -> str:
        """"job 12 left n2 behind (node 1 (n2): bandwidth: ...)"."""
        return f"job {self.job_id} left {', '.join(self.nodes)} behind ({self.reason})"


@dataclass(frozen=True)
class JobRecord(JsonRecord):
    """What was submitted where; `submitted` is False when the backend refused it (`error`)."""

    backend: BackendKind
    submitted: bool
    time: str
    job_id: str | None = None  # Slurm's job id
    prep_job_id: str | None = None  # its data preparation job, which it depends on (Slurm)
    error: str | None = None
    cancelled_job_id: str | None = None  # accepted by Slurm, cancelled: it would never start
    process: LocalProcess | None = None  # local runs
    exit_code: int | None = None  # local runs: the launcher's exit code once it ended
    ended: str | None = None
    start_step: int = 0  # the newest checkpoint's step at submission
    requeues: tuple[Requeue, ...] = ()
    allocations: tuple[Allocation, ...] = ()  # Slurm: every start of the job
    restarts: tuple[Restart, ...] = ()
    exclusions: tuple[Exclusion, ...] = ()  # submitted again without these nodes
    final_state: FinalState | None = None
    final_reason: str | None = None

    @classmethod
    def of_job(cls, path: Path, backend: BackendKind = BackendKind.SLURM,
               job_id: str | None = None) -> JobRecord:
        """job.json at `path`, or the record of a job submitted (or started) by hand, which
        sft-launch never wrote one for."""
        return cls.read_if_exists(path) or cls(backend=backend, submitted=True, time=utc_now(),
                                               job_id=job_id)
