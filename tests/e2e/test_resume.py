"""A local run stopped every way a user stops one still ends bitwise equal to an uninterrupted
run: `sft-launch cancel` and Ctrl-C (both: checkpoint after the current step, exit 130), then
kill -9 of everything (resume from the newest checkpoint, the newest one corrupted)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from launcher.contract.events import Checkpointed, Event, Message, Started, Stopped, TrainLogged
from launcher.contract.vocabulary import ExitCode
from tests.conftest import REPO, SFT_LAUNCH, cli_env
from tests.e2e.conftest import QUICKSTART
from tests.helpers.cli_status import Shown
from tests.helpers.processes import kill_everything, processes_in, wait_for_event
from tests.helpers.run_folder import events, of_kind, rank_reports, summary

pytestmark = pytest.mark.slow
STEPS, SAVE_EVERY = 16, 5
SETTINGS = ["--backend", "local", "--quiet",
            "--set", "data.max_train_samples=512", "--set", "data.max_eval_samples=32",
            "--set", f"train.max_steps={STEPS}", "--set", f"train.save_every={SAVE_EVERY}",
            "--set", "train.log_every=1", "--set", "tracking.mode=disabled"]


def launch(run_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*SFT_LAUNCH, QUICKSTART, "--run-dir", run_dir, *SETTINGS, *extra],
                            cwd=REPO, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def losses(found: list[Event]) -> dict[int, float]:
    return {e.step: e.loss for e in of_kind(found, TrainLogged)}


def trained_past(step: int) -> object:
    return lambda e: isinstance(e, TrainLogged) and e.step > step


def stopped_gracefully(run_dir: Path, proc: subprocess.Popen, before: int) -> Stopped:
    """The run stopped after a checkpoint of its current step, and says how to continue."""
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == ExitCode.INTERRUPTED, out
    stop = of_kind(events(run_dir)[before:], Stopped)[-1]
    assert stop.checkpoint == f"checkpoints/step-{stop.step}", stop
    assert (run_dir / stop.checkpoint / "manifest.json").is_file()
    assert "--resume" in out and f"after step {stop.step}" in out, out
    assert not processes_in(run_dir), "a worker outlived the stop"
    return stop


def resumed_from(run_dir: Path, before: int, step: int) -> None:
    """The launch after `before` events started at `step`, redoing nothing."""
    start = of_kind(events(run_dir)[before:], Started)[0]
    assert start.step == step
    assert sorted(losses(events(run_dir)[before:]))[0] == step + 1


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    proc = launch(run_dir)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return run_dir


def test_stopped_every_way_ends_equal_to_an_uninterrupted_run(reference: Path, run_cli,
                                                              tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # 1. `sft-launch cancel` from another shell: SIGTERM to the run's process group.
    first = launch(run_dir)
    wait_for_event(run_dir, trained_past(1), first)
    shown = Shown.parse(run_cli("status", run_dir).stdout)
    assert shown.state == "RUNNING", shown
    cancelled = run_cli("cancel", run_dir, timeout=300)
    assert cancelled.returncode == 0 and "STOPPED" in cancelled.stderr, cancelled.stderr
    stop = stopped_gracefully(run_dir, first, 0)
    shown = Shown.parse(run_cli("status", run_dir).stdout)
    assert shown.state.startswith("STOPPED") and "--resume" in shown.state, shown
    assert not (run_dir / "summary.json").exists()

    # 2. --resume, then Ctrl-C (SIGINT to sft-launch): the same graceful stop.
    before = len(events(run_dir))
    second = launch(run_dir, "--resume")
    wait_for_event(run_dir, trained_past(stop.step + 1), second)
    second.send_signal(signal.SIGINT)
    resumed_from(run_dir, before, stop.step)
    stop = stopped_gracefully(run_dir, second, before)

    # 3. --resume, then kill -9 of sft-launch and every worker after a periodic checkpoint.
    before = len(events(run_dir))
    third = launch(run_dir, "--resume")
    wait_for_event(run_dir, lambda e: isinstance(e, Checkpointed) and e.step > stop.step + 1,
                   third)
    wait_for_event(run_dir, trained_past(stop.step + SAVE_EVERY), third)
    kill_everything(run_dir, third)
    assert Shown.parse(run_cli("status", run_dir).stdout).state.startswith("DIED")
    resumed_from(run_dir, before, stop.step)

    # 4. The newest checkpoint is corrupt (truncated): --resume takes the one before.
    steps = sorted(int(p.name.removeprefix("step-")) for p in (run_dir / "checkpoints").glob(
        "step-*"))
    newest = run_dir / "checkpoints" / f"step-{steps[-1]}"
    victim = max((p for p in newest.rglob("*") if p.is_file() and p.name != "manifest.json"),
                 key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    before = len(events(run_dir))
    last = launch(run_dir, "--resume")
    out, _ = last.communicate(timeout=600)
    assert last.returncode == 0, out
    new = events(run_dir)[before:]
    assert any(f"skipping checkpoints/step-{steps[-1]}" in e.text for e in of_kind(new, Message))
    resumed_from(run_dir, before, steps[-2])

    # Every step's loss is the uninterrupted run's, and the final weights are bitwise equal.
    expected = losses(events(reference))
    for step, loss in losses(events(run_dir)).items():
        assert loss == pytest.approx(expected[step], abs=1e-6), step
    assert summary(run_dir).steps == STEPS
    assert summary(run_dir).eval["loss"] == pytest.approx(summary(reference).eval["loss"],
                                                         abs=1e-6)
    fingerprints = {r.final_weights_sha256 for r in rank_reports(run_dir)}
    assert fingerprints == {r.final_weights_sha256 for r in rank_reports(reference)}
    assert len(fingerprints) == 1
