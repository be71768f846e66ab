"""An interrupted run resumes from its newest complete checkpoint on the same loss curve."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from launcher.contract.events import Checkpointed, Event, Message, Started, TrainLogged
from tests.conftest import REPO, SFT_LAUNCH, cli_env
from tests.e2e.conftest import QUICKSTART
from tests.helpers.run_folder import events, of_kind, rank_reports, summary

pytestmark = pytest.mark.slow
STEPS, SAVE_EVERY = 10, 3
SETTINGS = ["--backend", "local", "--quiet",
            "--set", "data.max_train_samples=256", "--set", "data.max_eval_samples=32",
            "--set", f"train.max_steps={STEPS}", "--set", f"train.save_every={SAVE_EVERY}",
            "--set", "train.log_every=1", "--set", "tracking.mode=disabled"]


def launch(run_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*SFT_LAUNCH, QUICKSTART, "--run-dir", run_dir, *SETTINGS, *extra],
                            cwd=REPO, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def losses(found: list[Event]) -> dict[int, float]:
    return {e.step: e.loss for e in of_kind(found, TrainLogged)}


def wait_for_checkpoint(run_dir: Path, step: int, proc: subprocess.Popen) -> None:
    deadline = time.time() + 300
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        # events() is empty until the event log exists
        if any(e.step >= step for e in of_kind(events(run_dir), Checkpointed)):
            return
        time.sleep(0.2)
    raise AssertionError("no checkpoint appeared")


def test_interrupted_run_resumes_on_the_same_curve(tmp_path: Path) -> None:
    reference = launch(tmp_path / "reference")
    out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, out

    interrupted = launch(tmp_path / "resumed")
    wait_for_checkpoint(tmp_path / "resumed", SAVE_EVERY * 2, interrupted)
    interrupted.send_signal(signal.SIGTERM)  # like a preemption: the whole job dies
    out, _ = interrupted.communicate(timeout=120)
    assert interrupted.returncode != 0
    assert not (tmp_path / "resumed" / "summary.json").exists()
    checkpoints = sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir()
                         if p.name.startswith("step-"))
    assert checkpoints, "no complete checkpoint survived the interruption"
    resumed_from = max(int(name.removeprefix("step-")) for name in checkpoints)
    first_events = events(tmp_path / "resumed")

    resumed = launch(tmp_path / "resumed", "--resume")
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out

    found = events(tmp_path / "resumed")[len(first_events):]
    assert any(f"step-{resumed_from}" in e.text for e in of_kind(found, Message))
    start = of_kind(found, Started)[0]
    assert start.step == resumed_from
    after = losses(found)
    assert sorted(after) == list(range(resumed_from + 1, STEPS + 1))
    expected = losses(events(tmp_path / "reference"))
    for step, loss in after.items():
        assert loss == pytest.approx(expected[step], abs=1e-6), step
    ref_summary = summary(tmp_path / "reference")
    new_summary = summary(tmp_path / "resumed")
    assert new_summary.steps == STEPS
    assert new_summary.eval["loss"] == pytest.approx(ref_summary.eval["loss"], abs=1e-6)
    fingerprints = {r.final_weights_sha256 for r in rank_reports(tmp_path / "resumed")}
    assert fingerprints == {r.final_weights_sha256 for r in
                            rank_reports(tmp_path / "reference")}
