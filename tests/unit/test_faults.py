"""SFT_LAUNCH_FAULT: a real signal to the worker's own process, at one step, once per run."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from launcher.contract.errors import LaunchError
from launcher.worker.faults import Fault, FaultPlan


def test_the_forms_it_takes() -> None:
    assert Fault.parse("KILL@4:1") == Fault(signal.SIGKILL, 4, 1)
    assert Fault.parse("sigstop@12") == Fault(signal.SIGSTOP, 12, None)
    for bad in ("KILL", "NOPE@3", "KILL@x", "KILL@3:one"):
        with pytest.raises(LaunchError, match="SIGNAL@STEP"):
            Fault.parse(bad)


def test_it_fires_on_its_rank_and_step_once_per_run_folder(tmp_path: Path) -> None:
    received: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, _frame: received.append(signum))
    try:
        other_rank = FaultPlan(0, tmp_path, "USR2@3:1")
        other_rank.after_step(3)
        assert received == []
        target = FaultPlan(1, tmp_path, "USR2@3:1")
        target.after_step(2)
        assert received == []
        target.after_step(3)
        assert received == [signal.SIGUSR2]
        FaultPlan(1, tmp_path, "USR2@3:1").after_step(3)  # a restart of the same run
        assert received == [signal.SIGUSR2]
        FaultPlan(0, tmp_path / "..", "").after_step(3)  # none set
        assert received == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)
