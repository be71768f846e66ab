"""Following a job to its end, whatever its backend: `Backend.status` every `poll_s`, the
progress drawn from the run folder's event log, and a signal to this process turned into a stop
request for the job (or array job) it started.

Backends never wait nor draw; this module is the one place that does both.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import time
from collections.abc import Callable, Iterator, Sequence

from launcher.backends.base import Backend, JobStatus
from launcher.contract.errors import UsageError
from launcher.contract.run_folder import RunFolder
from launcher.contract.sweep import SweepFolder
from launcher.contract.vocabulary import JobState
from launcher.ui.progress import console, follow

ENDED_POLL_S = 0.2


class Every:
    """`check()` at most every `every_s` seconds; the last answer in between."""

    def __init__(self, every_s: float, check: Callable[[], bool]) -> None:
        self.every_s, self.check = every_s, check
        self.asked, self.last = float("-inf"), True

    def __call__(self) -> bool:
        if time.monotonic() - self.asked >= self.every_s:
            self.last, self.asked = self.check(), time.monotonic()
        return self.last


def follow_job(folder: RunFolder, backend: Backend, *, quiet: bool) -> JobStatus:
    """Draw the job's progress until it ends; returns its final status."""
    last = [backend.status(folder)]

    def running() -> bool:
        last[0] = backend.status(folder)
        return last[0].active

    follow(folder, is_running=Every(backend.poll_s, running), quiet=quiet,
           poll_s=min(1.0, backend.poll_s))
    return last[0]


def wait_until_ended(folder: RunFolder, backend: Backend, timeout_s: float) -> JobStatus:
    """The job's status once it ended, or after `timeout_s` (no progress shown)."""
    deadline = time.monotonic() + timeout_s
    status = backend.status(folder)
    while status.active and time.monotonic() < deadline:
        time.sleep(ENDED_POLL_S)
        status = backend.status(folder)
    return status


def follow_array(sweep: SweepFolder, runs: Sequence[RunFolder], backend: Backend, *,
                 quiet: bool) -> Iterator[tuple[RunFolder, JobStatus]]:
    """Follow an array job's runs in order, each until it ended and the array moved past it
    (the next run started, or the array ended: then its status is final); yields each run that
    started, with that status."""

    def started(folder: RunFolder) -> bool:
        return backend.status(folder).state is not JobState.NOT_SUBMITTED

    def array_ended() -> bool:
        return not backend.array_status(sweep).active

    def still_on(run: RunFolder, later: RunFolder | None) -> bool:
        moved_on = (later is not None and started(later)) or array_ended()
        return not moved_on or backend.status(run).active

    for run, later in zip(runs, [*runs[1:], None], strict=True):
        while not started(run):
            if array_ended():
                if not started(run):  # it may have started just before the array ended
                    return
                break
            time.sleep(ENDED_POLL_S)
        follow(run, is_running=Every(backend.poll_s, functools.partial(still_on, run, later)),
               quiet=quiet, poll_s=min(1.0, backend.poll_s))
        yield run, backend.status(run)


@contextlib.contextmanager
def stopping(stop: Callable[[bool], object]) -> Iterator[None]:
    """While inside, SIGINT or SIGTERM to this process asks the job to stop: `stop(False)`, its
    workers checkpoint first; a second Ctrl-C kills them at once, `stop(True)`."""
    asked: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        if asked and signum == signal.SIGINT:
            _ask(stop, now=True)
            console.print("second Ctrl-C: killed the workers without a checkpoint")
        elif not asked:
            console.print(f"{signal.Signals(signum).name}: the workers checkpoint and stop "
                          "(Ctrl-C again to kill them at once)")
            _ask(stop, now=False)
        asked.append(signum)

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM,
                                                                        signal.SIGINT)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def stopping_job(folder: RunFolder, backend: Backend) -> contextlib.AbstractContextManager:
    """`stopping` a job that belongs to this process (`Backend.attached`); otherwise nothing:
    a signal stops the following only."""
    if not backend.attached:
        return contextlib.nullcontext()
    return stopping(lambda now: backend.cancel(folder, now=now))


def _ask(stop: Callable[[bool], object], *, now: bool) -> None:
    with contextlib.suppress(UsageError):  # it ended meanwhile: nothing to stop
        stop(now)
