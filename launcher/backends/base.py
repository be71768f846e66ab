"""The interface of a backend (where a run folder executes): a new backend is one module.

A backend submits one run folder's job, or the points of a sweep as one array job, and records
each in its folder's job.json; `status`, `logs` and `cancel` work from the folders alone, from
any later shell. It never waits for a job nor draws anything: following a job to its end is the
caller's (`launcher.ui.waiting`), through `status`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

from launcher.contract.events import CheckpointFailed, Event, Hung, Stopped, read_events
from launcher.contract.job import JobRecord
from launcher.contract.run_folder import RunFolder
from launcher.contract.sweep import SweepFolder
from launcher.contract.vocabulary import BackendKind, JobState

if TYPE_CHECKING:
    from launcher.contract.plan import Plan
    from launcher.recipe.schema import Recipe


@dataclass(frozen=True)
class JobStatus:
    """What a backend says about a run's job (or a sweep's array job)."""

    state: JobState
    job: str  # "job 42" (Slurm), "process group 123 on host1" (local)
    elapsed: str = ""
    nodes: str = ""
    detail: str = ""  # why: a pending reason, an exit code, what to do

    @property
    def active(self) -> bool:
        """It may still run."""
        return self.state.active

    def shown(self) -> str:
        """"FAILED (exit code 3:0)": the state, and its detail in brackets."""
        return self.state + (f" ({self.detail})" if self.detail else "")

    def ended(self) -> str:
        """"job 42 ended FAILED (exit code 3:0)"."""
        return f"{self.job} ended {self.shown()}"


@dataclass(frozen=True)
class LogSource:
    """A job's output file; `labelled`: each worker line starts with "<node rank>: "."""

    path: Path
    labelled: bool


class Backend(Protocol):
    kind: ClassVar[BackendKind]
    # The job belongs to the process that submitted it: that process follows it to its end, and
    # a signal to it stops the job (local). Otherwise the job runs on without it (Slurm).
    attached: ClassVar[bool]
    poll_s: ClassVar[float]  # how often a follower asks `status`

    def unavailable(self) -> str | None:
        """Why this machine cannot submit to the backend (None: it can)."""

    def submit(self, folder: RunFolder, *, resume: bool) -> str:
        """Start the job (recorded in job.json); returns how to refer to it."""

    def write_array(self, sweep: SweepFolder, points: Sequence[tuple[Recipe, Plan]],
                      max_parallel: int) -> None:
        """Check that the points (their run folders written) can run as one array job and
        write what submitting it needs; raises a LaunchError before anything is submitted."""

    def submit_array(self, sweep: SweepFolder, runs: Sequence[RunFolder],
                     max_parallel: int) -> str:
        """Submit the run folders as one array job (recorded in the sweep's and each run's
        job.json); returns what was submitted, in words."""

    def status(self, folder: RunFolder) -> JobStatus: ...

    def array_status(self, sweep: SweepFolder) -> JobStatus:
        """The array job as a whole: active while any of its runs may still start or run."""

    def logs(self, folder: RunFolder) -> LogSource: ...

    def cancel(self, folder: RunFolder, *, now: bool = False) -> None:
        """Ask the job to end: its workers checkpoint and stop (`now`: at once, where the
        backend can tell the two apart). Returns at once; a UsageError when it is not active."""

    def cancel_array(self, sweep: SweepFolder, *, now: bool = False) -> str:
        """Ask every run of the array job to end, and the rest never to start; returns what
        was asked, in words."""


def last_event(folder: RunFolder) -> Event | None:
    last = None
    for event in read_events(folder.events):
        last = event
    return last


def restarts_said(record: JobRecord | None) -> str:
    """"restarted 2 time(s), last after rank 1 was killed by SIGKILL"; "": none."""
    if record is None or not record.restarts:
        return ""
    return (f"restarted {len(record.restarts)} time(s), last after "
            f"{record.restarts[-1].cause.describe()}")


def folder_state(folder: RunFolder) -> tuple[JobState, str] | None:
    """What the run folder says of a job that no longer runs, for when the scheduler does not
    know it (any more): COMPLETED (summary.json), FAILED (job.json's final state, or a hang as
    the workers' last event), STOPPED (their last event: stopped on a signal); None when the
    folder does not say."""
    if folder.summary.exists():
        return JobState.COMPLETED, ""
    record = JobRecord.read_if_exists(folder.job)
    if record is not None and record.final_state is not None:
        return JobState.FAILED, f"{record.final_state}: {record.final_reason}"
    last = last_event(folder)
    if isinstance(last, Stopped):
        return JobState.STOPPED, f"{last.describe()}; --resume continues it"
    if isinstance(last, Hung | CheckpointFailed):
        return JobState.FAILED, last.describe()
    return None
