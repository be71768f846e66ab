"""The local backend: the run folder's `launch.sh` on this machine, in its own process group.

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
import time
from datetime import datetime
from typing import ClassVar

from launcher.backends.base import JobStatus, LogSource
from launcher.contract.job import JobRecord, LocalProcess, utc_now
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import BackendKind
from launcher.errors import UsageError
from launcher.progress import follow

STOP_WAIT_S = 120.0


class LocalBackend:
    """Runs on this machine; the workers' output goes to logs/launch.log."""

    kind: ClassVar[BackendKind] = BackendKind.LOCAL

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def unavailable(self) -> str | None:
        return None

    def submit(self, folder: RunFolder, *, resume: bool) -> str:
        args = ["bash", str(folder.launch_script), *(["--resume"] if resume else [])]
        with folder.launch_log.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        JobRecord(backend=self.kind, submitted=True, time=utc_now(),
                  process=LocalProcess(host=socket.gethostname(), pid=self.proc.pid)
                  ).write(folder.job)
        return f"process group {self.proc.pid}"

    def wait(self, folder: RunFolder, *, quiet: bool) -> int:
        proc = self.proc
        if proc is None:
            raise UsageError(f"{folder.path}: not started by this process")

        def stop(signum: int, _frame: object) -> None:
            _signal_group(proc.pid, signum)

        previous = signal.signal(signal.SIGTERM, stop)
        try:
            follow(folder, is_running=lambda: proc.poll() is None, quiet=quiet)
            code = proc.wait()
        except KeyboardInterrupt:
            _signal_group(proc.pid, signal.SIGTERM)
            proc.wait(timeout=STOP_WAIT_S)
            self._ended(folder, proc.returncode)
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
        self._ended(folder, code)
        return code

    def _ended(self, folder: RunFolder, code: int) -> None:
        record = JobRecord.read(folder.job)
        dataclasses.replace(record, exit_code=code, ended=utc_now()).write(folder.job)

    def status(self, folder: RunFolder) -> JobStatus:
        record = JobRecord.read_if_exists(folder.job)
        if record is None or record.process is None:
            return JobStatus("NOT STARTED", active=False, job="not started",
                             detail=f"run it: bash {folder.launch_script}")
        process = record.process
        where = f"process group {process.pid} on {process.host}"
        elapsed = _elapsed(record)
        if folder.summary.exists():
            return JobStatus("COMPLETED", active=False, job=where, elapsed=elapsed)
        if process.host != socket.gethostname():
            return JobStatus("UNKNOWN", active=False, job=where, elapsed=elapsed,
                             detail=f"started on {process.host}: check there")
        if _group_alive(process.pid):
            return JobStatus("RUNNING", active=True, job=where, elapsed=elapsed)
        if record.exit_code is not None:
            return JobStatus("FAILED", active=False, job=where, elapsed=elapsed,
                             detail=f"exit code {record.exit_code}")
        return JobStatus("DIED", active=False, job=where, elapsed=elapsed,
                         detail="the processes are gone and left no summary.json; see "
                         f"{folder.launch_log}")

    def logs(self, folder: RunFolder) -> LogSource:
        return LogSource(folder.launch_log, labelled=False)

    def cancel(self, folder: RunFolder) -> JobStatus:
        current = self.status(folder)
        if not current.active:
            raise UsageError(f"{folder.path}: the run is not running ({current.state}): "
                             "nothing to cancel")
        record = JobRecord.read(folder.job)
        assert record.process is not None
        _signal_group(record.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_S
        while _group_alive(record.process.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        return self.status(folder)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group is left (zombies aside: their parent reaps them)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _elapsed(record: JobRecord) -> str:
    start = datetime.fromisoformat(record.time)
    end = datetime.fromisoformat(record.ended) if record.ended else datetime.now(start.tzinfo)
    return time.strftime("%H:%M:%S", time.gmtime(max(0.0, (end - start).total_seconds())))
