"""Faults caused on purpose, to test recovery with real failures at a known point.

`SFT_LAUNCH_FAULT=SIGNAL@STEP` (every rank) or `SIGNAL@STEP:RANK` (one global rank): once step
STEP is done, its checkpoint written when one is due, the rank sends itself SIGNAL (`KILL`,
`STOP`, `SEGV`, ...): a crash or a freeze exactly there, whatever the machine's speed. It fires
once per run folder (a marker in logs/), so a restarted or resumed run goes past that step.
Never needed outside tests; a malformed value is one error at start.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from launcher.contract.errors import LaunchError

ENV = "SFT_LAUNCH_FAULT"


@dataclass(frozen=True)
class Fault:
    """Send `signal` to this process after `step` on `rank` (None: on every rank)."""

    signal: signal.Signals
    step: int
    rank: int | None

    @classmethod
    def parse(cls, text: str) -> Fault:
        try:
            name, _, where = text.partition("@")
            step, _, rank = where.partition(":")
            return cls(signal.Signals[f"SIG{name.upper().removeprefix('SIG')}"], int(step),
                       int(rank) if rank else None)
        except (KeyError, ValueError):
            raise LaunchError(f"{ENV}={text!r}: expected SIGNAL@STEP or SIGNAL@STEP:RANK, "
                              "e.g. KILL@4:1") from None


class FaultPlan:
    """The fault this rank was given, if any, fired at most once per run folder."""

    def __init__(self, rank: int, logs: Path, text: str | None = None) -> None:
        text = os.environ.get(ENV) if text is None else text
        self.fault = Fault.parse(text) if text else None
        self.rank, self.marker = rank, logs / f"fault-fired-rank{rank}"

    def after_step(self, step: int) -> None:
        """Fire if this is the fault's step and rank and it has not fired in this run."""
        fault = self.fault
        if fault is None or fault.step != step or fault.rank not in (None, self.rank):
            return
        try:
            self.marker.touch(exist_ok=False)
        except FileExistsError:
            return
        print(f"sft-launch worker: {ENV}: rank {self.rank} sends itself {fault.signal.name} "
              f"after step {step}", flush=True)
        os.kill(os.getpid(), fault.signal)
