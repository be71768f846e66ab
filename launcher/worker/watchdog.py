"""The hang watchdog: every rank heartbeats, and ends the job when some rank stops making progress.

A thread in each rank writes `logs/heartbeat/rank-<R>.json` every few seconds (`alive` counts
these beats; `progress` counts the work the main thread reports) and reads the other ranks'.
The job is hung when a rank's heartbeat stops changing (frozen, stopped, dead) or when no rank
makes progress, for longer than the phase allows: `train.hang_timeout_s` in training, 4x that
in start-up, preprocessing, evaluation and checkpointing. Then every live rank dumps its Python
stacks into logs/, the lowest live rank names the stalled ranks (event log and stderr) and kills
those on its own host, and each live rank exits with ExitCode.HUNG, so that the launcher (and
Slurm's --kill-on-bad-exit) end the rest. The thread also stops the rank when its launcher dies.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass

from launcher.contract.events import EventLog, Hung, StalledRank
from launcher.contract.heartbeat import Heartbeat, Phase
from launcher.contract.records import ContractError
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import ExitCode

SLOW_PHASE_FACTOR = 4


def allowance(timeout_s: float, phase: Phase) -> float:
    """Seconds without progress a phase may take: training steps get `timeout_s`."""
    return timeout_s if phase is Phase.TRAIN else SLOW_PHASE_FACTOR * timeout_s


@dataclass
class _Seen:
    """When this rank last saw another rank's heartbeat change (its own monotonic clock)."""

    beat: Heartbeat | None
    alive_at: float
    progress_at: float


class Watchdog:
    """Heartbeat of one rank, and the check of all ranks (off when `timeout_s` is 0)."""

    def __init__(self, folder: RunFolder, rank: int, world_size: int, timeout_s: float) -> None:
        self.folder, self.rank, self.world_size, self.timeout_s = folder, rank, world_size, (
            timeout_s)
        self.beat_s = max(1.0, min(5.0, timeout_s / 12)) if timeout_s else 5.0
        self.host, self.pid, self.parent = socket.gethostname(), os.getpid(), os.getppid()
        self.phase, self.progress_count, self.step, self.alive = Phase.STARTUP, 0, 0, 0
        self.started = time.monotonic()
        self.seen: dict[int, _Seen] = {}
        self.lock = threading.Lock()  # one writer of the heartbeat file at a time
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sft-launch-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self.folder.heartbeat(self.rank).parent.mkdir(parents=True, exist_ok=True)
        self._beat()
        self.thread.start()
        return self

    def stop(self) -> None:
        """This rank is finished: say so, so that ranks still finishing do not wait for it."""
        self.done.set()
        if self.thread.is_alive():
            self.thread.join(timeout=10)
        self.phase = Phase.DONE
        self._beat()

    def progress(self, phase: Phase, step: int | None = None) -> None:
        """The main thread did a unit of work in `phase` (no I/O, but when the phase changes:
        the others judge this rank by its published phase's allowance)."""
        changed = phase is not self.phase
        self.phase = phase
        self.progress_count += 1
        if step is not None:
            self.step = step
        if changed:
            self._beat()

    def _run(self) -> None:
        while not self.done.wait(self.beat_s):
            if os.getppid() != self.parent:
                print(f"sft-launch worker: rank {self.rank}: the launcher (pid {self.parent}) "
                      "is gone; stopping", file=sys.stderr, flush=True)
                os._exit(ExitCode.FAILED)
            self._beat()
            if self.timeout_s:
                stalled = self._stalled()
                if stalled:
                    self._end(stalled)

    def _beat(self) -> None:
        with self.lock:
            self.alive += 1
            Heartbeat(rank=self.rank, host=self.host, pid=self.pid, phase=self.phase,
                      progress=self.progress_count, step=self.step, alive=self.alive,
                      ).write(self.folder.heartbeat(self.rank))

    def _read(self, rank: int) -> Heartbeat | None:
        try:
            return Heartbeat.read_if_exists(self.folder.heartbeat(rank))
        except ContractError:  # replaced while read on a shared file system: next beat
            return None

    def _stalled(self) -> list[StalledRank]:
        now = time.monotonic()
        silent, idle = [], []
        for rank in range(self.world_size):
            beat = self._read(rank)
            seen = self.seen.setdefault(rank, _Seen(None, self.started, self.started))
            if beat is not None and beat != seen.beat:
                if seen.beat is None or beat.alive != seen.beat.alive:
                    seen.alive_at = now
                if seen.beat is None or (beat.phase, beat.progress) != (seen.beat.phase,
                                                                        seen.beat.progress):
                    seen.progress_at = now
                seen.beat = beat
            phase = seen.beat.phase if seen.beat else Phase.STARTUP
            if phase is Phase.DONE:
                continue
            limit = allowance(self.timeout_s, phase)
            record = StalledRank(rank=rank, host=seen.beat.host if seen.beat else "?",
                                 pid=seen.beat.pid if seen.beat else 0, phase=phase.value,
                                 step=seen.beat.step if seen.beat else 0,
                                 silent_s=now - seen.progress_at,
                                 responding=now - seen.alive_at <= limit)
            if not record.responding:
                silent.append(record)
            elif now - seen.progress_at > limit:
                idle.append(record)
        if silent:
            return silent
        working = sum(1 for seen in self.seen.values()
                      if not (seen.beat and seen.beat.phase is Phase.DONE))
        return idle if idle and len(idle) == working else []

    def _end(self, stalled: list[StalledRank]) -> None:
        """Dump this rank's stacks; the lowest live rank reports and kills local stalled ranks."""
        with self.folder.stacks(self.rank).open("w") as handle:
            handle.write(f"rank {self.rank} (host {self.host}, pid {self.pid}), in "
                         f"{self.phase} at step {self.step}, when the hang was detected:\n")
            handle.flush()
            faulthandler.dump_traceback(handle, all_threads=True)
        frozen = {s.rank for s in stalled if not s.responding}
        reporter = min(r for r in range(self.world_size) if r not in frozen)
        event = Hung(timeout_s=self.timeout_s, stalled=tuple(stalled),
                     stacks="logs/stacks-rank-*.txt")
        print(f"sft-launch worker: rank {self.rank}: hang: {event.describe()}", file=sys.stderr,
              flush=True)
        if self.rank == reporter:
            EventLog(self.folder.events, enabled=True).write(event)
            for rank in stalled:
                if not rank.responding and rank.host == self.host and rank.pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(rank.pid, signal.SIGKILL)
        os._exit(ExitCode.HUNG)
