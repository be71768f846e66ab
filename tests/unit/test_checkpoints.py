"""Checkpoint manifests and the requeue decision, on folders made here (no training)."""

from __future__ import annotations

import pytest

from launcher.backends.requeue import Decision, decide
from launcher.contract.checkpoints import newest_step, newest_valid, problem, write_manifest
from launcher.contract.job import FinalState, JobRecord
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import BackendKind
from launcher.recipe.load import load_recipe
from launcher.render.run_folder import recipe_toml
from tests.conftest import REPO


def checkpoint(root, step: int, size: int = 1000):
    folder = root / f"step-{step}"
    (folder / "shard").mkdir(parents=True)
    (folder / "shard" / "model.bin").write_bytes(bytes(range(256)) * (size // 256 + 1))
    (folder / "trainer_state.json").write_text(f'{{"step": {step}}}')
    write_manifest(folder, step, world_size=2)
    return folder


def test_a_manifest_catches_truncation_corruption_and_loss(tmp_path) -> None:
    folder = checkpoint(tmp_path, 3)
    assert problem(folder) is None
    shard = folder / "shard" / "model.bin"
    data = shard.read_bytes()
    shard.write_bytes(data[:-1])
    assert "has 1023 bytes, the manifest says 1024" in problem(folder)
    assert problem(folder, hashes=False) is not None  # sizes alone see a truncation
    shard.write_bytes(b"x" + data[1:])
    assert problem(folder) == "shard/model.bin does not match its hash"
    assert problem(folder, hashes=False) is None  # same size: only the hash tells
    shard.unlink()
    assert problem(folder) == "shard/model.bin is missing"
    (folder / "manifest.json").unlink()
    assert "no readable manifest" in problem(folder)


def test_the_newest_valid_checkpoint_wins(tmp_path) -> None:
    for step in (2, 4, 6):
        checkpoint(tmp_path, step)
    (tmp_path / ".step-8.tmp").mkdir()  # still being written: never a candidate
    (tmp_path / "step-6" / "trainer_state.json").write_text("{}")  # corrupt, other size
    skipped = []
    found = newest_valid(tmp_path, skipped=lambda folder, why: skipped.append(folder.name))
    assert found is not None and found[0].name == "step-4" and found[1].world_size == 2
    assert skipped == ["step-6"]
    assert newest_step(tmp_path) == 4
    assert newest_step(tmp_path / "none") == 0


@pytest.fixture
def run_folder(tmp_path) -> RunFolder:
    folder = RunFolder(tmp_path / "run")
    folder.checkpoints.mkdir(parents=True)
    recipe = load_recipe(REPO / "recipes" / "quickstart.toml", ["slurm.max_requeues=2"])
    folder.recipe.write_text(recipe_toml(recipe, "quickstart.toml"))
    JobRecord(backend=BackendKind.SLURM, submitted=True, time="t", job_id="7",
              start_step=5).write(folder.job)
    return folder


def test_requeue_only_with_progress_and_up_to_the_limit(run_folder: RunFolder) -> None:
    checkpoint(run_folder.checkpoints, 5)  # what the job started from: no progress yet
    decision, line = decide(run_folder, "USR1", restart=0)
    assert decision is Decision.END and "NO_PROGRESS" in line
    record = JobRecord.read(run_folder.job)
    assert record.final_state is FinalState.NO_PROGRESS and not record.requeues
    record = JobRecord(backend=BackendKind.SLURM, submitted=True, time="t", job_id="7",
                       start_step=5)
    record.write(run_folder.job)
    for restart, step in enumerate((9, 12)):
        checkpoint(run_folder.checkpoints, step)
        assert decide(run_folder, "USR1", restart)[0] is Decision.REQUEUE
    requeues = JobRecord.read(run_folder.job).requeues
    assert [(r.restart, r.checkpoint_step, r.signal) for r in requeues] == [
        (0, 9, "USR1"), (1, 12, "USR1")]
    checkpoint(run_folder.checkpoints, 15)
    decision, line = decide(run_folder, "TERM", 2)
    assert decision is Decision.END and "slurm.max_requeues = 2" in line
    assert JobRecord.read(run_folder.job).final_state is FinalState.REQUEUE_LIMIT
    run_folder.summary.write_text("{}")
    assert decide(run_folder, "USR1", 3)[0] is Decision.COMPLETED
