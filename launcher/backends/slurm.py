"""The Slurm backend: `sbatch` a run folder's `job.sbatch` (a sweep's points: one job array,
`sweep.sbatch`), inspect and cancel the job.

job.json (`JobRecord`) holds the job id, or why Slurm refused the job. Once Slurm forgot a job
(it keeps finished jobs for MinJobAge, 300 s by default, unless accounting is set up), the run
folder says how it ended.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, NoReturn

import launcher.backends.slurm_commands as slurm
from launcher.backends.base import JobStatus, LogSource, folder_state, restarts_said
from launcher.contract.checkpoints import newest_step
from launcher.contract.errors import LaunchError, UsageError
from launcher.contract.events import EventLog
from launcher.contract.job import JobRecord, utc_now
from launcher.contract.plan import Plan
from launcher.contract.run_folder import RunFolder
from launcher.contract.sweep import SweepFolder, SweepRecord
from launcher.contract.vocabulary import BackendKind, JobState
from launcher.data.cache_entry import cache_entry, is_complete
from launcher.recipe.load import load_recipe

if TYPE_CHECKING:
    from launcher.recipe.schema import Recipe

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


class SubmitError(LaunchError):
    """Slurm refused the job (unknown partition, too many nodes, time above the limit, ...)."""

    exit_code = 2


class Refused(Exception):
    """Slurm refused a job, or accepted one it will never start (then cancelled: `job_id`)."""

    def __init__(self, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.message, self.job_id = message, job_id


def sbatch(cwd: Path, script: str, args: list[str], options: Sequence[str] = ()) -> str:
    """`sbatch --parsable OPTIONS SCRIPT ARGS` in `cwd`; the job id, or Refused with Slurm's
    reason."""
    try:
        out = slurm.run(["sbatch", "--parsable", *options, script, *args], cwd=cwd)
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
    attached: ClassVar[bool] = False
    poll_s: ClassVar[float] = 2.0

    def unavailable(self) -> str | None:
        if shutil.which("sbatch") is None:
            return "no `sbatch` on PATH on this machine"
        if "SLURM_CONF" not in os.environ and not Path("/etc/slurm/slurm.conf").exists():
            return "no Slurm configuration (SLURM_CONF or /etc/slurm/slurm.conf)"
        return None

    def submit(self, folder: RunFolder, *, resume: bool) -> str:
        """`sbatch --parsable job.sbatch`, after its data preparation job (prepare.sbatch,
        unless the cache entry is complete), which it depends on; records job.json; returns
        the job id(s)."""
        prep_id = _submit_prep(folder)
        options = [f"--dependency=afterok:{prep_id}", "--kill-on-invalid-dep=yes"] if prep_id \
            else []
        try:
            job_id = sbatch(folder.path, folder.job_script.name, ["--resume"] if resume else [],
                            options)
        except Refused as err:
            if prep_id:
                slurm.scancel(prep_id)
            _refused(folder, err.message, err.job_id)
        JobRecord(backend=self.kind, submitted=True, time=utc_now(), job_id=job_id,
                  prep_job_id=prep_id, start_step=newest_step(folder.checkpoints)
                  ).write(folder.job)
        if prep_id:
            return f"Slurm job {job_id}, after its data preparation job {prep_id}"
        return f"Slurm job {job_id}"

    def status(self, folder: RunFolder) -> JobStatus:
        job_id = job_of(folder)
        if job_id is None:
            record = JobRecord.read_if_exists(folder.job)
            error = "; ".join((record.error or "").splitlines()) if record else ""
            hint = f"cd {shlex.quote(str(folder.path))} && sbatch job.sbatch"
            return JobStatus(JobState.NOT_SUBMITTED, job="not submitted",
                             detail=error or f"dry run: {hint}")
        info = slurm.state(job_id)
        record = JobRecord.read_if_exists(folder.job)
        state = info.job_state
        detail = info.reason if state is JobState.PENDING and info.reason else ""
        if info.exit_code and not state.active:
            detail = f"exit code {info.exit_code}"
        if info.state not in (state, "UNKNOWN"):  # Slurm's own word says more
            detail = ", ".join(filter(None, [info.state, detail]))
        if record and record.final_state and not state.active:
            detail = f"{record.final_state}: {record.final_reason}"
        if not info.known:  # forgotten: the run folder is the truth
            state, detail = folder_state(folder) or (
                JobState.UNKNOWN, f"Slurm does not know job {job_id} (any more), and the run "
                "folder does not say how it ended")
        if record and record.prep_job_id and info.job_state is not JobState.RUNNING:
            detail = _prep_said(folder, record.prep_job_id, info) or detail
        if record and record.exclusions:
            detail = "; ".join(filter(None, [detail, record.exclusions[-1].describe() +
                                             ", submitted again without"]))
        if record and record.requeues:
            last = record.requeues[-1].cause
            detail = "; ".join(filter(None, [detail, f"requeued {len(record.requeues)} time(s)"
                                             + (f", last: {last}" if last else "")]))
        detail = "; ".join(filter(None, [detail, restarts_said(record)]))
        plan = Plan.read(folder.plan)
        return JobStatus(state, job=f"job {job_id}", elapsed=info.elapsed,
                         nodes=f"{info.nodes or '-'} ({plan.nodes} node(s) x "
                         f"{plan.procs_per_node} process(es))", detail=detail)

    def logs(self, folder: RunFolder) -> LogSource:
        job_id = job_of(folder)
        if job_id is None:
            raise UsageError(f"{folder.path} was never submitted: no Slurm output yet")
        if "_" in job_id:  # a job array's task writes under its own numeric job id
            found = sorted(folder.logs.glob("slurm-*.out"), key=lambda p: p.stat().st_mtime)
            return LogSource(found[-1] if found else folder.slurm_log(job_id), labelled=True)
        return LogSource(folder.slurm_log(job_id), labelled=True)

    def cancel(self, folder: RunFolder, *, now: bool = False) -> None:
        """scancel the job (Slurm signals its workers, which checkpoint if they have time)."""
        job_id = job_of(folder)
        if job_id is None:
            raise UsageError(f"{folder.path} was never submitted: nothing to cancel")
        info = slurm.state(job_id)
        if not info.job_state.active:
            raise UsageError(f"job {job_id} already ended ({info.state}): nothing to cancel")
        record = JobRecord.read_if_exists(folder.job)
        if record and record.prep_job_id and slurm.state(record.prep_job_id).job_state.active:
            slurm.scancel(record.prep_job_id)  # its data preparation, for nothing now
        slurm.scancel(job_id)

    def write_array(self, sweep: SweepFolder, points: Sequence[tuple[Recipe, Plan]],
                      max_parallel: int) -> None:
        """sweep.sbatch: one job array whose task N runs point N's job.sbatch."""
        from launcher.render.sbatch import render_sweep_script

        recipes, plans = [recipe for recipe, _ in points], [plan for _, plan in points]
        first = (plans[0].nodes, plans[0].procs_per_node, recipes[0].slurm)
        if any((plan.nodes, plan.procs_per_node, recipe.slurm) != first for recipe, plan in points):
            raise UsageError("the points of a Slurm sweep run as one job array, so they must "
                             "share nodes, processes per node and [slurm] settings; sweep those "
                             "with separate launches")
        sweep.job_script.write_text(render_sweep_script(
            recipes[0], plans[0], sweep.path.resolve(), len(points), max_parallel,
            sweep.path.name))

    def submit_array(self, sweep: SweepFolder, runs: Sequence[RunFolder],
                     max_parallel: int) -> str:
        """`sbatch sweep.sbatch`; every run's job.json names its task, `<array>_<N>`."""
        try:
            array = sbatch(sweep.path, sweep.job_script.name, [])
        except Refused as err:
            JobRecord(backend=self.kind, submitted=False, time=utc_now(), error=err.message,
                      cancelled_job_id=err.job_id).write(sweep.job)
            raise UsageError(f"{err.message}\n  the sweep folder is kept, not submitted: "
                             f"{sweep.path}") from None
        for index, run in enumerate(runs):
            JobRecord(backend=self.kind, submitted=True, time=utc_now(),
                      job_id=f"{array}_{index}").write(run.job)
        JobRecord(backend=self.kind, submitted=True, time=utc_now(), job_id=array).write(sweep.job)
        return f"job array {array}: {len(runs)} task(s), at most {max_parallel} at a time"

    def array_status(self, sweep: SweepFolder) -> JobStatus:
        """Active while Slurm has a task of it to run; once it forgot them, the runs' own."""
        record = JobRecord.read_if_exists(sweep.job)
        if record is None or record.job_id is None:
            return JobStatus(JobState.NOT_SUBMITTED, job="not submitted",
                             detail=(record.error or "") if record else "")
        where = f"job array {record.job_id}"
        tasks = [info.job_state for info in slurm.array_states(record.job_id)]
        if not tasks:
            points = SweepRecord.read(sweep.record).points
            tasks = [self.status(sweep.point(point)).state for point in points]
        for state in (JobState.RUNNING, JobState.PENDING):
            if state in tasks:
                return JobStatus(state, job=where)
        ended = set(tasks) - {JobState.COMPLETED}
        return JobStatus(ended.pop() if len(ended) == 1 else JobState.FAILED if ended
                         else JobState.COMPLETED, job=where)

    def cancel_array(self, sweep: SweepFolder, *, now: bool = False) -> str:
        record = JobRecord.read_if_exists(sweep.job)
        if record is None or record.job_id is None:
            raise UsageError(f"{sweep.path}: the sweep was never submitted")
        slurm.scancel(record.job_id)
        return f"cancelled job array {record.job_id}"


def _submit_prep(folder: RunFolder) -> str | None:
    """Submit the run's data preparation job: its id; None when the run has none
    (slurm.prep_job = false) or its cache entry is complete already."""
    if not folder.prepare_script.exists():
        return None
    entry = cache_entry(load_recipe(folder.recipe), Plan.read(folder.plan))
    if is_complete(entry):
        EventLog(folder.events, True).message(
            f"data preparation: skipped, the cache entry {entry} is complete")
        return None
    try:
        return sbatch(folder.path, folder.prepare_script.name, [])
    except Refused as err:
        _refused(folder, f"data preparation job: {err.message}", err.job_id)


def _prep_said(folder: RunFolder, prep_id: str, job: slurm.JobInfo) -> str:
    """What the data preparation job says of a training job that has not run: it waits for
    it, or it failed (and Slurm cancelled the training job, --kill-on-invalid-dep); "" else."""
    if job.job_state is JobState.PENDING and job.reason == "Dependency":
        return f"waiting for its data preparation job {prep_id}"
    prep = slurm.state(prep_id)
    if prep.known and prep.job_state not in (JobState.COMPLETED, JobState.PENDING,
                                             JobState.RUNNING):
        log = folder.prepare_log(prep_id).relative_to(folder.path)
        return f"its data preparation job {prep_id} ended {prep.state}: see {log}"
    return ""


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


def _refused(folder: RunFolder, message: str, job_id: str | None = None) -> NoReturn:
    JobRecord(backend=BackendKind.SLURM, submitted=False, time=utc_now(), error=message,
              cancelled_job_id=job_id).write(folder.job)
    raise SubmitError(f"{message}\n  the run folder is kept, not submitted: {folder.path}")
