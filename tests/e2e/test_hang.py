"""A stalled rank ends the run: SIGSTOP on one worker of a real 2-process run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from launcher.contract.events import Hung, TrainLogged
from launcher.contract.heartbeat import Heartbeat, Phase
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import ExitCode
from tests.conftest import REPO, SFT_LAUNCH, cli_env
from tests.e2e.conftest import QUICKSTART
from tests.helpers.processes import processes_in, wait_for_event
from tests.helpers.run_folder import events, of_kind

pytestmark = pytest.mark.slow
TIMEOUT_S = 30


def test_a_stopped_worker_ends_the_run_naming_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [*SFT_LAUNCH, QUICKSTART, "--backend", "local", "--run-dir", run_dir, "--quiet",
         "--set", "data.max_train_samples=4000", "--set", "data.max_eval_samples=32",
         "--set", "train.log_every=1", "--set", f"train.hang_timeout_s={TIMEOUT_S}",
         "--set", "tracking.mode=disabled"],
        cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_event(run_dir, lambda e: isinstance(e, TrainLogged) and e.step >= 2, proc)
        victim = Heartbeat.read(RunFolder(run_dir).heartbeat(1))
        assert victim.phase is Phase.TRAIN, victim
        os.kill(victim.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        out, _ = proc.communicate(timeout=180)
        took = time.monotonic() - stopped_at
    finally:
        proc.kill()
    assert proc.returncode not in (0, ExitCode.INTERRUPTED), out
    assert took < TIMEOUT_S + 40, f"the hang ended the run after {took:.0f} s"
    hung = of_kind(events(run_dir), Hung)
    assert hung, out
    assert [r.rank for r in hung[0].stalled] == [1]
    assert not hung[0].stalled[0].responding and hung[0].stalled[0].pid == victim.pid
    message = f"rank 1 (host {victim.host}, pid {victim.pid}) made no progress"
    assert message in out  # the CLI's failure line
    stacks = (run_dir / "logs" / "stacks-rank-0.txt").read_text()
    assert "most recent call first" in stacks and "loop.py" in stacks, stacks
    assert not processes_in(run_dir), "a worker was left running"
    assert not (run_dir / "summary.json").exists()
