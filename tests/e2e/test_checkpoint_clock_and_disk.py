"""Checkpoints against the clock, in the background and against a full disk: time-based
checkpoints whatever the step count; background checkpoints that a restart resumes from to the
weights of a run without them; and a checkpoint that finds no room on a real (tmpfs)
filesystem removed, the previous one kept, the run stopped cleanly and resumable to the
uninterrupted weights."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from launcher.contract.checkpoints import problem
from launcher.contract.events import Checkpointed, CheckpointFailed, WorkersDied
from launcher.contract.run_folder import RunFolder
from tests.conftest import REPO, SFT_LAUNCH, cli_env
from tests.e2e.conftest import ALPACA
from tests.helpers.cli_status import Shown
from tests.helpers.run_folder import events, of_kind, rank_reports, summary

pytestmark = pytest.mark.slow
STEPS, SAVE_EVERY = 8, 4


def launch(run_dir: Path, model: Path, *extra: str, resume: bool = False,
           fault: str = "") -> subprocess.CompletedProcess:
    settings = [f"model.path='{model}'", "distributed.strategy=ddp",
                "data.max_train_samples=240", "data.max_length=64", "data.eval_fraction=0.1",
                f"train.max_steps={STEPS}", "train.global_batch_size=8", "train.log_every=1",
                "tracking.mode=disabled", *extra]
    return subprocess.run(
        [*SFT_LAUNCH, ALPACA, "--backend", "local", "--run-dir", run_dir, "--quiet",
         "--procs-per-node", "2", *(a for s in settings for a in ("--set", s)),
         *(["--resume"] if resume else [])],
        cwd=REPO, env=cli_env(SFT_LAUNCH_FAULT=fault), capture_output=True, text=True, timeout=900)


def test_time_based_checkpoints_come_whatever_the_step_count(tiny_llama: Path,
                                                             tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done = launch(run_dir, tiny_llama, "train.save_every_minutes=0.0001",
                  "train.keep_checkpoints=1")
    assert done.returncode == 0, done.stdout + done.stderr
    # due after every step but the last (the final model is saved instead)
    assert [e.step for e in of_kind(events(run_dir), Checkpointed)] == list(range(1, STEPS))
    kept = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert kept == [f"step-{STEPS - 1}"] and problem(run_dir / "checkpoints" / kept[0]) is None


@pytest.fixture(scope="module")
def reference(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run, never interrupted and never checkpointed."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    done = launch(run_dir, tiny_llama)
    assert done.returncode == 0, done.stdout + done.stderr
    return run_dir


def test_background_checkpoints_resume_to_the_weights_of_foreground_ones(
        reference: Path, tiny_llama: Path, tmp_path: Path) -> None:
    saving = ("train.save_every=2", "train.keep_checkpoints=4")
    background = tmp_path / "background"
    # rank 1 killed after step 5: the supervisor restarts from the newest complete checkpoint
    done = launch(background, tiny_llama, *saving, "train.async_checkpoints=true",
                  fault="KILL@5:1")
    assert done.returncode == 0, done.stdout + done.stderr
    # A background checkpoint is complete from the first step that ends after its write:
    # step 4's, begun 1 step before the kill, may not be.
    (died,) = of_kind(events(background), WorkersDied)
    assert died.checkpoint_step in (2, 4)
    assert {e.step for e in of_kind(events(background), Checkpointed)} == {2, 4, 6, 8}
    for step in (4, 6, 8):
        assert problem(background / "checkpoints" / f"step-{step}") is None
    assert {r.final_weights_sha256 for r in rank_reports(background)} == {
        r.final_weights_sha256 for r in rank_reports(reference)}


@contextmanager
def tmpfs_checkpoints(run_dir: Path, size: str) -> Iterator[Path]:
    """A real filesystem of `size` (tmpfs), mounted where the run's checkpoints go."""
    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs needs root (as CI and the Slurm tests have)")
    mount = run_dir / "checkpoints"
    mount.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mount], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", mount], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """3 MiB where the run's checkpoints go: room for one checkpoint, not two."""
    with tmpfs_checkpoints(tmp_path / "run", "3m") as mount:
        yield mount


def test_no_room_for_one_checkpoint_stops_the_launch(tiny_llama: Path, tmp_path: Path) -> None:
    with tmpfs_checkpoints(tmp_path / "run", "1m"):
        done = launch(tmp_path / "run", tiny_llama, f"train.save_every={SAVE_EVERY}")
    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    assert " MiB free where checkpoints go" in said and "one checkpoint of this model is about" \
        in said, said
    assert "Traceback" not in said and not RunFolder(tmp_path / "run").events.exists()


def test_a_full_disk_stops_the_run_cleanly_and_resume_finishes_it(reference: Path,
                                                                 tiny_llama: Path,
                                                                 small_disk: Path,
                                                                 run_cli) -> None:
    one_checkpoint = sum(f.stat().st_size for f in (reference / "final").rglob("*")) * 3
    assert 1 << 20 < one_checkpoint < 3 << 20, "3 MiB holds one checkpoint, not two"

    run_dir = small_disk.parent
    args = (f"train.save_every={SAVE_EVERY}", "train.keep_checkpoints=2")
    done = launch(run_dir, tiny_llama, *args)
    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert "a checkpoint is written before the previous one is removed" in said, said  # warned
    (failed,) = of_kind(events(run_dir), CheckpointFailed)
    assert failed.step == 2 * SAVE_EVERY and " MiB free where checkpoints go" in failed.reason
    assert float(failed.reason.split("; ")[-1].split()[0]) < 1.0, failed.reason
    assert failed.newest == f"checkpoints/step-{SAVE_EVERY}"
    assert f"the checkpoint of step {2 * SAVE_EVERY} could not be written" in said, said
    assert not of_kind(events(run_dir), WorkersDied), "a full disk is not restarted"
    assert sorted(p.name for p in small_disk.iterdir()) == [f"step-{SAVE_EVERY}"]
    assert problem(small_disk / f"step-{SAVE_EVERY}") is None
    shown = Shown.parse(run_cli("status", run_dir).stdout)
    assert shown.state.startswith("FAILED") and "make room, then --resume" in shown.state

    subprocess.run(["mount", "-o", "remount,size=64m", small_disk], check=True)  # room made
    done = launch(run_dir, tiny_llama, *args, resume=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert summary(run_dir).steps == STEPS
    assert {r.final_weights_sha256 for r in rank_reports(run_dir)} == {
        r.final_weights_sha256 for r in rank_reports(reference)}
    assert RunFolder(run_dir).summary.exists()
