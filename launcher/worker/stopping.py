"""Stop requests: a signal asks every rank to stop after the current optimizer step.

USR1 (Slurm's time-limit warning, `--signal=B:USR1@...`, forwarded by job.sbatch), TERM
(preemption, `sft-launch cancel`, the launcher forwarding) and INT only set a flag here; the
ranks agree on it in the all-reduce each step already does, checkpoint, and exit with
ExitCode.STOPPED. `install` runs first thing in the worker, before the heavy imports.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """The first stop signal this process received (None: none)."""

    def __init__(self) -> None:
        self.signal: str | None = None

    def install(self) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.signal is None:
            self.signal = signal.Signals(signum).name
            print(f"sft-launch worker: {self.signal} received: stopping after this step with a "
                  "checkpoint", file=sys.stderr, flush=True)

    @property
    def requested(self) -> bool:
        return self.signal is not None


REQUEST = StopRequest()


class StopTraining(Exception):
    """Raised out of the loop once the ranks agreed to stop and the checkpoint is on disk."""

    def __init__(self, step: int, signal_name: str) -> None:
        super().__init__(f"stopped on {signal_name} after step {step}")
        self.step, self.signal = step, signal_name
