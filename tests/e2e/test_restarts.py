"""A worker that dies is restarted by its node's supervisor, without a person: a real SIGKILL
of a real worker process (SFT_LAUNCH_FAULT, so that it lands at a known step on any machine),
the run completed with the weights of a run never interrupted; the dead rank named."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from launcher.contract.events import Started, TrainLogged, WorkersDied
from launcher.contract.job import FinalState, JobRecord
from launcher.contract.run_folder import RunFolder
from tests.conftest import REPO, SFT_LAUNCH, cli_env
from tests.e2e.conftest import ALPACA
from tests.helpers.cli_status import Shown
from tests.helpers.run_folder import events, of_kind, rank_reports, summary

pytestmark = pytest.mark.slow
STEPS, SAVE_EVERY = 10, 4


def launch(run_dir: Path, model: Path, procs: int, *extra: str,
           fault: str = "") -> subprocess.CompletedProcess:
    settings = [f"model.path='{model}'", "distributed.strategy=ddp",
                "data.max_train_samples=240", "data.max_length=64", "data.eval_fraction=0.1",
                f"train.max_steps={STEPS}", "train.global_batch_size=8",
                f"train.save_every={SAVE_EVERY}", "train.log_every=1", "tracking.mode=disabled",
                *extra]
    return subprocess.run(
        [*SFT_LAUNCH, ALPACA, "--backend", "local", "--run-dir", run_dir, "--quiet",
         "--procs-per-node", str(procs), *(a for s in settings for a in ("--set", s))],
        cwd=REPO, env=cli_env(SFT_LAUNCH_FAULT=fault), capture_output=True, text=True,
        timeout=900)


@pytest.fixture(scope="module")
def reference(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    done = launch(run_dir, tiny_llama, 2)
    assert done.returncode == 0, done.stdout + done.stderr
    return run_dir


def test_a_killed_rank_is_restarted_from_the_checkpoint_and_ends_as_if_never_killed(
        reference: Path, tiny_llama: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    killed_after = SAVE_EVERY + 2
    done = launch(run_dir, tiny_llama, 2, fault=f"KILL@{killed_after}:1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert summary(run_dir).steps == STEPS
    assert {r.final_weights_sha256 for r in rank_reports(run_dir)} == {
        r.final_weights_sha256 for r in rank_reports(reference)}
    # The dead rank, by name, in the event log, job.json and what the user saw.
    died = of_kind(events(run_dir), WorkersDied)
    assert len(died) == 1 and died[0].restart and died[0].checkpoint_step == SAVE_EVERY
    record = JobRecord.read(RunFolder(run_dir).job)
    assert [(r.attempt, r.checkpoint_step, r.cause.rank, r.cause.signal)
            for r in record.restarts] == [(1, SAVE_EVERY, 1, "SIGKILL")]
    said = done.stdout + done.stderr
    assert "rank 1 (host" in said and "was killed by SIGKILL" in said, said
    assert f"restart 1 from the checkpoint of step {SAVE_EVERY}" in said, said
    # Only the steps since the checkpoint were done twice.
    starts = [e.step for e in of_kind(events(run_dir), Started)]
    trained = [e.step for e in of_kind(events(run_dir), TrainLogged)]
    assert starts == [0, SAVE_EVERY]
    redone = range(SAVE_EVERY + 1, killed_after + 1)
    assert sorted(trained) == sorted([*range(1, STEPS + 1), *redone])


def test_without_restarts_the_job_fails_naming_the_rank_that_died(tiny_llama: Path,
                                                                  run_cli,
                                                                  tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done = launch(run_dir, tiny_llama, 2, "train.max_restarts=0", fault="SEGV@2:1")
    assert done.returncode == 1, done.stdout + done.stderr
    said = done.stdout + done.stderr
    assert "rank 1 (host" in said and "was killed by SIGSEGV" in said, said
    record = JobRecord.read(RunFolder(run_dir).job)
    assert record.restarts == () and record.final_state is FinalState.RESTART_LIMIT
    shown = Shown.parse(run_cli("status", run_dir).stdout)
    assert shown.state.startswith("FAILED"), shown
    assert "SIGSEGV" in shown.state and "train.max_restarts = 0" in shown.state


def test_one_process_is_restarted_too(tiny_llama: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done = launch(run_dir, tiny_llama, 1, fault=f"KILL@{SAVE_EVERY + 1}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert summary(run_dir).steps == STEPS
    (restart,) = JobRecord.read(RunFolder(run_dir).job).restarts
    assert (restart.cause.rank, restart.cause.signal, restart.checkpoint_step) == (
        0, "SIGKILL", SAVE_EVERY)
