"""Real processes in tests: wait for a run's events, find what is left running in a run folder."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from launcher.contract.events import Event
from tests.helpers.run_folder import events


def processes_in(run_dir: Path) -> list[int]:
    """Live processes whose working folder is `run_dir` (launch.sh and job.sbatch cd there)."""
    found = []
    target = run_dir.resolve()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z" and Path(os.readlink(entry / "cwd")).resolve() == target:
                found.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return found


def wait_for_event(run_dir: Path, check: Callable[[Event], bool],
                   proc: subprocess.Popen | None = None, timeout: float = 300) -> Event:
    """The first event of the run for which `check` holds (fails if `proc` ends first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = next((e for e in events(run_dir) if check(e)), None)
        if found is not None:
            return found
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended ({proc.returncode}) before the event: "
                                 f"{proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.1)
    raise AssertionError(f"no such event within {timeout:.0f} s")


def wait_gone(pids: Callable[[], list[int]], timeout: float) -> list[int]:
    """`pids()` once it is empty, or what is left after `timeout`."""
    deadline = time.monotonic() + timeout
    left = pids()
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = pids()
    return left


def kill_everything(run_dir: Path, launcher: subprocess.Popen) -> None:
    """kill -9 of `sft-launch` (its process group) and of every worker of the run, as a node
    crash would; returns once they are all gone."""
    workers = processes_in(run_dir)
    os.killpg(launcher.pid, signal.SIGKILL)
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    launcher.communicate(timeout=60)
    assert not wait_gone(lambda: processes_in(run_dir), 30), "a worker outlived kill -9"
