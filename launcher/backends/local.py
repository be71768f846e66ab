"""The local backend: the run folder's `launch.sh` on this machine, in its own process group; a
sweep's points one after another, run by `local_array` in a process of its own.

job.json records the launcher's pid (the group id), so `status` tells running from dead and
`cancel` stops the group from any shell of this machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from launcher.backends.base import (
    JobStatus,
    LogSource,
    folder_state,
    last_event,
    restarts_said,
)
from launcher.contract.errors import UsageError
from launcher.contract.events import CheckpointFailed, Hung, Stopped
from launcher.contract.job import JobRecord, LocalProcess, utc_now
from launcher.contract.run_folder import RunFolder
from launcher.contract.sweep import SweepFolder
from launcher.contract.vocabulary import BackendKind, ExitCode, JobState
from launcher.render.run_folder import default_port

if TYPE_CHECKING:
    from launcher.contract.plan import Plan
    from launcher.recipe.schema import Recipe

# After its launcher exited, how long a run's other processes may linger before `status` stops
# calling it running (in the process that started it).
STOP_WAIT_S = 120.0


class LocalBackend:
    """Runs on this machine; the workers' output goes to logs/launch.log."""

    kind: ClassVar[BackendKind] = BackendKind.LOCAL
    attached: ClassVar[bool] = True
    poll_s: ClassVar[float] = 0.5

    def __init__(self) -> None:
        self.procs: dict[Path, subprocess.Popen] = {}  # what this process started, by folder
        self.exited: dict[Path, float] = {}  # when those launchers exited (monotonic)

    def unavailable(self) -> str | None:
        return None

    def submit(self, folder: RunFolder, *, resume: bool) -> str:
        args = ["bash", str(folder.launch_script), *(["--resume"] if resume else [])]
        proc = self._start_recorded(args, folder.path, folder.launch_log, folder.job,
                                    _port_env(folder))
        return f"process group {proc.pid}"

    def _start_recorded(self, args: list[str], key: Path, log: Path, job: Path,
                        env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start `args` (output to `log`), keep it under `key` and record it in `job`."""
        proc = _start(args, log, env)
        self.procs[key.resolve()] = proc
        JobRecord(backend=self.kind, submitted=True, time=utc_now(),
                  process=LocalProcess(host=socket.gethostname(), pid=proc.pid)).write(job)
        return proc

    def process(self, folder: RunFolder) -> subprocess.Popen | None:
        """The launcher this backend started for `folder`."""
        return self.procs.get(folder.path.resolve())

    def status(self, folder: RunFolder) -> JobStatus:
        record = JobRecord.read_if_exists(folder.job)
        if record is None or record.process is None:
            return JobStatus(JobState.NOT_SUBMITTED, job="not started",
                             detail=f"run it: bash {folder.launch_script}")
        process = record.process
        where = f"process group {process.pid} on {process.host}"
        if process.host != socket.gethostname():
            state, detail = folder_state(folder) or (
                JobState.UNKNOWN, f"started on {process.host}: check there")
            return JobStatus(state, job=where, elapsed=_elapsed(record), detail=detail)
        alive = _group_alive(process.pid)  # before the exit code: a launcher that is not alive
        record = self._reaped(folder, record)  # has exited, so it is reaped here
        elapsed, restarts = _elapsed(record), restarts_said(record)
        if alive and not self._lingering(folder):
            return JobStatus(JobState.RUNNING, job=where, elapsed=elapsed, detail=restarts)
        code = record.exit_code
        if folder.summary.exists() and code in (None, 0):
            return JobStatus(JobState.COMPLETED, job=where, elapsed=elapsed, detail=restarts)
        if record.final_state is not None:
            return JobStatus(JobState.FAILED, job=where, elapsed=elapsed,
                             detail=f"{record.final_state}: {record.final_reason}")
        last = last_event(folder)
        if isinstance(last, Stopped):
            return JobStatus(JobState.STOPPED, job=where, elapsed=elapsed,
                             detail=f"{last.describe()}; --resume continues it")
        if isinstance(last, Hung | CheckpointFailed):
            return JobStatus(JobState.FAILED, job=where, elapsed=elapsed, detail=last.describe())
        if code == 0:  # an lr range test: no summary
            return JobStatus(JobState.COMPLETED, job=where, elapsed=elapsed)
        if code is not None:
            return JobStatus(JobState.FAILED, job=where, elapsed=elapsed,
                             detail=f"exit code {code}")
        return JobStatus(JobState.DIED, job=where, elapsed=elapsed,
                         detail="the processes are gone and left no summary.json; see "
                         f"{folder.launch_log}")

    def _reaped(self, folder: RunFolder, record: JobRecord) -> JobRecord:
        """The record, with the exit code of a launcher this process started once it exited."""
        proc = self.process(folder)
        if (proc is None or record.exit_code is not None or record.process is None
                or record.process.pid != proc.pid or proc.poll() is None):
            return record
        self.exited[folder.path.resolve()] = time.monotonic()
        record = JobRecord.read(folder.job)  # with what the supervisor wrote until it ended
        record = dataclasses.replace(record, exit_code=proc.returncode, ended=utc_now())
        record.write(folder.job)
        return record

    def _lingering(self, folder: RunFolder) -> bool:
        exited = self.exited.get(folder.path.resolve())
        return exited is not None and time.monotonic() - exited > STOP_WAIT_S

    def logs(self, folder: RunFolder) -> LogSource:
        return LogSource(folder.launch_log, labelled=False)

    def cancel(self, folder: RunFolder, *, now: bool = False) -> None:
        current = self.status(folder)
        if not current.active:
            raise UsageError(f"{folder.path}: the run is not running ({current.state}): "
                             "nothing to cancel")
        record = JobRecord.read(folder.job)
        assert record.process is not None
        signal_group(record.process.pid, signal.SIGKILL if now else signal.SIGTERM)

    def write_array(self, sweep: SweepFolder, points: Sequence[tuple[Recipe, Plan]],
                      max_parallel: int) -> None:
        """The points run one after another, each as written: nothing more to write."""

    def submit_array(self, sweep: SweepFolder, runs: Sequence[RunFolder],
                     max_parallel: int) -> str:
        """Start `local_array`, which runs the folders one after another (`max_parallel` is for
        schedulers: this machine runs one at a time)."""
        args = [sys.executable, "-m", "launcher.backends.local_array", str(sweep.path.resolve()),
                *(str(run.path.resolve()) for run in runs)]
        proc = self._start_recorded(args, sweep.path, sweep.log, sweep.job)
        return f"{len(runs)} run(s), one after another (process {proc.pid}, output in {sweep.log})"

    def array_status(self, sweep: SweepFolder) -> JobStatus:
        record = JobRecord.read_if_exists(sweep.job)
        if record is None or record.process is None:
            return JobStatus(JobState.NOT_SUBMITTED, job="not started")
        runner = record.process
        where = f"process {runner.pid} on {runner.host}"
        if runner.host != socket.gethostname():
            return JobStatus(JobState.UNKNOWN, job=where, detail=f"runs on {runner.host}")
        if _group_alive(runner.pid):
            return JobStatus(JobState.RUNNING, job=where, elapsed=_elapsed(record))
        record = JobRecord.read(sweep.job)  # its last words, written just before it ended
        state = {None: JobState.DIED, ExitCode.OK: JobState.COMPLETED,
                 ExitCode.STOPPED: JobState.STOPPED}.get(record.exit_code, JobState.FAILED)
        return JobStatus(state, job=where, elapsed=_elapsed(record))

    def cancel_array(self, sweep: SweepFolder, *, now: bool = False) -> str:
        """SIGTERM to `local_array`: the running point checkpoints and stops, no later point
        starts (`now`: SIGINT, the running point is killed at once)."""
        record = JobRecord.read_if_exists(sweep.job)
        if record is None or record.process is None:
            raise UsageError(f"{sweep.path}: the sweep was never started")
        runner = record.process
        if runner.host != socket.gethostname():
            raise UsageError(f"{sweep.path}: the sweep runs on {runner.host}: cancel it there")
        if not _group_alive(runner.pid):
            raise UsageError(f"{sweep.path}: its sweep is not running")
        signal_group(runner.pid, signal.SIGINT if now else signal.SIGTERM)
        return f"stopping the sweep (pid {runner.pid})"


def _start(args: list[str], log_path: Path,
           env: dict[str, str] | None = None) -> subprocess.Popen:
    """`args` in a session (and process group) of their own, output appended to `log_path`."""
    with log_path.open("ab") as log:
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _port_env(folder: RunFolder) -> dict[str, str] | None:
    """The environment of a launch whose rendezvous port in launch.sh (derived from the
    folder's name) is taken on this machine: the same with another port (SFT_LAUNCH_PORT), so
    runs in folders of the same name elsewhere run at once. None where the port is free or the
    user chose one."""
    if "SFT_LAUNCH_PORT" in os.environ or _bindable(default_port(folder.path)):
        return None
    with socket.socket() as sock:
        sock.bind(("", 0))
        return {**os.environ, "SFT_LAUNCH_PORT": str(sock.getsockname()[1])}


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    """Whether a live process of the group is left (zombies, which only wait to be reaped, do
    not count; on systems without /proc any member counts)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[2] == str(pgid) and fields[0] != "Z":  # state, ppid, pgrp, ...
                return True
    return False


def wait_until_gone(pgid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)


def _elapsed(record: JobRecord) -> str:
    start = datetime.fromisoformat(record.time)
    end = datetime.fromisoformat(record.ended) if record.ended else datetime.now(start.tzinfo)
    return time.strftime("%H:%M:%S", time.gmtime(max(0.0, (end - start).total_seconds())))
