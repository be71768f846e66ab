"""The interface of a backend (where a run folder executes): a third backend is one file.

`submit` starts the run folder's job and records it in job.json; `wait` follows it to its end;
`status`, `logs` and `cancel` work from the run folder alone, from any later shell.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import BackendKind


@dataclass(frozen=True)
class JobStatus:
    """What a backend says about a run's job."""

    state: str  # e.g. PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, DIED, NOT SUBMITTED
    active: bool  # may still run
    job: str  # "job 42" (Slurm), "process group 123 on host1" (local)
    elapsed: str = ""
    nodes: str = ""
    detail: str = ""  # why: a pending reason, an exit code, what to do

    def ended(self) -> str:
        """"job 42 ended FAILED (exit code 3:0)"."""
        return f"{self.job} ended {self.state}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class LogSource:
    """A job's output file; `labelled`: each worker line starts with "<node rank>: "."""

    path: Path
    labelled: bool


class Backend(Protocol):
    kind: ClassVar[BackendKind]

    def unavailable(self) -> str | None:
        """Why this machine cannot submit to the backend (None: it can)."""

    def submit(self, folder: RunFolder, *, resume: bool) -> str:
        """Start the job (recorded in job.json); returns how to refer to it."""

    def wait(self, folder: RunFolder, *, quiet: bool) -> int:
        """Show progress until the job ends; returns its exit code (0: completed)."""

    def status(self, folder: RunFolder) -> JobStatus: ...

    def logs(self, folder: RunFolder) -> LogSource: ...

    def cancel(self, folder: RunFolder) -> JobStatus:
        """Stop the job; returns its state once it ended."""
