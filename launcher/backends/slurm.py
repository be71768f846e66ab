"""The Slurm backend: `sbatch` a run folder's `job.sbatch`, follow, inspect and cancel the job.

job.json (`JobRecord`) holds the job id, or why Slurm refused the job.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import time
from pathlib import Path
from typing import ClassVar, NoReturn

import launcher.backends.slurm_commands as slurm
from launcher.backends.base import JobStatus, LogSource
from launcher.contract.checkpoints import newest_step
from launcher.contract.job import JobRecord, utc_now
from launcher.contract.plan import Plan
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import BackendKind
from launcher.errors import LaunchError, UsageError
from launcher.progress import follow

# Pending reasons that mean "never, as submitted" (partition limits are not enforced at submit
# time unless the cluster sets EnforcePartLimits).
NEVER_STARTS = {
    "PartitionTimeLimit": "its time limit is above the partition's MaxTime",
    "PartitionNodeLimit": "its node count is outside the partition's limits",
    "PartitionConfig": "the partition cannot satisfy the request (e.g. more nodes than it has)",
    "BadConstraints": "its constraints cannot be satisfied",
    "InvalidAccount": "the account is invalid",
    "InvalidQOS": "the QOS is invalid",
    "AccountNotAllowed": "the account may not use the partition",
    "QOSNotAllowed": "the QOS may not use the partition",
}
REASON_SETTLE_S = 2.5
CANCEL_WAIT_S = 30.0


class SubmitError(LaunchError):
    """Slurm refused the job (unknown partition, too many nodes, time above the limit, ...)."""

    exit_code = 2


class Refused(Exception):
    """Slurm refused a job, or accepted one it will never start (then cancelled: `job_id`)."""

    def __init__(self, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.message, self.job_id = message, job_id


def sbatch(cwd: Path, script: str, args: list[str]) -> str:
    """`sbatch --parsable SCRIPT ARGS` in `cwd`; the job id, or Refused with Slurm's reason."""
    try:
        out = slurm.run(["sbatch", "--parsable", script, *args], cwd=cwd)
    except slurm.SlurmCommandError as err:
        raise Refused(f"Slurm refused the job: {err.detail}") from None
    job_id = out.stdout.strip().split(";")[0]
    info = slurm.state(job_id)
    if info.reason == "PartitionConfig":  # the scheduler's first pass names the limit
        time.sleep(REASON_SETTLE_S)
        info = slurm.state(job_id)
    if info.state == "PENDING" and info.reason in NEVER_STARTS:
        slurm.scancel(job_id)
        raise Refused(f"Slurm accepted job {job_id} but will never start it: {info.reason} "
                      f"({NEVER_STARTS[info.reason]}); {slurm.request_vs_limits(job_id)}; "
                      "cancelled it", job_id)
    return job_id


class SlurmBackend:
    """Submits with sbatch; a job's output is logs/slurm-<job id>.out, lines labelled by node."""

    kind: ClassVar[BackendKind] = BackendKind.SLURM

    def unavailable(self) -> str | None:
        if shutil.which("sbatch") is None:
            return "no `sbatch` on PATH on this machine"
        if "SLURM_CONF" not in os.environ and not Path("/etc/slurm/slurm.conf").exists():
            return "no Slurm configuration (SLURM_CONF or /etc/slurm/slurm.conf)"
        return None

    def submit(self, folder: RunFolder, *, resume: bool) -> str:
        """`sbatch --parsable job.sbatch`; records job.json; returns the job id."""
        try:
            job_id = sbatch(folder.path, folder.job_script.name, ["--resume"] if resume else [])
        except Refused as err:
            _refused(folder, err.message, err.job_id)
        JobRecord(backend=self.kind, submitted=True, time=utc_now(), job_id=job_id,
                  start_step=newest_step(folder.checkpoints)).write(folder.job)
        return f"Slurm job {job_id}"

    def wait(self, folder: RunFolder, *, quiet: bool) -> int:
        """Follow the job's progress until it ends; returns its exit code (0: COMPLETED)."""
        poller = slurm.Poller(_submitted_job(folder))
        follow(folder, is_running=poller.active, quiet=quiet, poll_s=1.0)
        return poller.last.returncode

    def status(self, folder: RunFolder) -> JobStatus:
        job_id = job_of(folder)
        if job_id is None:
            record = JobRecord.read_if_exists(folder.job)
            error = "; ".join((record.error or "").splitlines()) if record else ""
            hint = f"cd {shlex.quote(str(folder.path))} && sbatch job.sbatch"
            return JobStatus("NOT SUBMITTED", active=False, job="not submitted",
                             detail=error or f"dry run: {hint}")
        info = slurm.state(job_id)
        record = JobRecord.read_if_exists(folder.job)
        detail = info.reason if info.state == "PENDING" and info.reason else ""
        if info.exit_code and not info.active:
            detail = f"exit code {info.exit_code}"
        if record and record.final_state and not info.active:
            detail = f"{record.final_state}: {record.final_reason}"
        if record and record.requeues:
            detail = "; ".join(filter(None, [detail, f"requeued {len(record.requeues)} time(s)"]))
        plan = Plan.read(folder.plan)
        return JobStatus(info.state, active=info.active, job=f"job {job_id}",
                         elapsed=info.elapsed, nodes=f"{info.nodes or '-'} ({plan.nodes} node(s)"
                         f" x {plan.procs_per_node} process(es))", detail=detail)

    def logs(self, folder: RunFolder) -> LogSource:
        job_id = job_of(folder)
        if job_id is None:
            raise UsageError(f"{folder.path} was never submitted: no Slurm output yet")
        if "_" in job_id:  # a job array's task writes under its own numeric job id
            found = sorted(folder.logs.glob("slurm-*.out"), key=lambda p: p.stat().st_mtime)
            return LogSource(found[-1] if found else folder.slurm_log(job_id), labelled=True)
        return LogSource(folder.slurm_log(job_id), labelled=True)

    def cancel(self, folder: RunFolder) -> JobStatus:
        """scancel the job and wait until Slurm reports it ended."""
        job_id = job_of(folder)
        if job_id is None:
            raise UsageError(f"{folder.path} was never submitted: nothing to cancel")
        info = slurm.state(job_id)
        if not info.active:
            raise UsageError(f"job {job_id} already ended ({info.state}): nothing to cancel")
        slurm.scancel(job_id)
        deadline = time.monotonic() + CANCEL_WAIT_S
        while info.active and time.monotonic() < deadline:
            time.sleep(0.5)
            info = slurm.state(job_id)
        return self.status(folder)


def job_of(folder: RunFolder) -> str | None:
    """The newest job of the folder: job.json's (a job array's task: "<array>_<task>"), or a
    later one submitted by hand (its logs/slurm-<id>.out)."""
    record = JobRecord.read_if_exists(folder.job)
    recorded = record.job_id if record and record.submitted else None
    by_hand = [int(m.group(1)) for p in folder.logs.glob("slurm-*.out")
               if (m := re.fullmatch(r"slurm-(\d+)\.out", p.name))]
    if recorded and (not by_hand or "_" in recorded or int(recorded) >= max(by_hand)):
        return recorded
    return str(max(by_hand)) if by_hand else None


def _submitted_job(folder: RunFolder) -> str:
    job_id = job_of(folder)
    if job_id is None:
        raise UsageError(f"{folder.path} was never submitted")
    return job_id


def _refused(folder: RunFolder, message: str, job_id: str | None = None) -> NoReturn:
    JobRecord(backend=BackendKind.SLURM, submitted=False, time=utc_now(), error=message,
              cancelled_job_id=job_id).write(folder.job)
    raise SubmitError(f"{message}\n  the run folder is kept, not submitted: {folder.path}")
