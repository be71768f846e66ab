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
from pathlib import Path
from typing import ClassVar

from launcher.backends.base import JobStatus, LogSource
from launcher.contract.events import Stopped, read_events
from launcher.contract.job import JobRecord, LocalProcess, utc_now
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import BackendKind
from launcher.errors import UsageError
from launcher.progress import console, follow, stopped_text

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
        """Follow the run to its end. Ctrl-C or SIGTERM asks the workers to checkpoint and stop
        (they get SIGTERM through the launcher); a second Ctrl-C kills them at once."""
        proc = self.proc
        if proc is None:
            raise UsageError(f"{folder.path}: not started by this process")
        asked: list[int] = []

        def stop(signum: int, _frame: object) -> None:
            if asked and signum == signal.SIGINT:
                _signal_group(proc.pid, signal.SIGKILL)
                console.print("second Ctrl-C: killed the workers without a checkpoint")
            elif not asked:
                console.print(f"{signal.Signals(signum).name}: the workers checkpoint and stop "
                              "(Ctrl-C again to kill them at once)")
                _signal_group(proc.pid, signal.SIGTERM)
            asked.append(signum)

        previous = {signum: signal.signal(signum, stop)
                    for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            follow(folder, is_running=lambda: proc.poll() is None, quiet=quiet)
            code = proc.wait()
            _wait_until_gone(proc.pid, STOP_WAIT_S)  # a launcher's children may outlive it
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
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
        stopped = _last_stop(folder)
        if stopped is not None:
            return JobStatus("STOPPED", active=False, job=where, elapsed=elapsed,
                             detail=f"{stopped_text(stopped)}; --resume continues it")
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
        _wait_until_gone(record.process.pid, STOP_WAIT_S)
        return self.status(folder)


def _signal_group(pgid: int, signum: int) -> None:
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


def _wait_until_gone(pgid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)


def _last_stop(folder: RunFolder) -> Stopped | None:
    """The run's last event, when it says the workers stopped on a signal."""
    last = None
    for event in read_events(folder.events):
        last = event
    return last if isinstance(last, Stopped) else None


def _elapsed(record: JobRecord) -> str:
    start = datetime.fromisoformat(record.time)
    end = datetime.fromisoformat(record.ended) if record.ended else datetime.now(start.tzinfo)
    return time.strftime("%H:%M:%S", time.gmtime(max(0.0, (end - start).total_seconds())))
