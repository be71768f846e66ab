"""A sweep on the real test cluster: 2 learning rates x 2 seeds as one job array of 4 tasks, the
leaderboard of its completed runs (still COMPLETED once Slurm forgot their jobs), and best.toml
reproducing the winner."""

from __future__ import annotations

import dataclasses
import re
import subprocess

import pytest

from launcher.contract.job import JobRecord
from launcher.contract.sweep import Leaderboard, SweepFolder, SweepRecord
from tests.helpers.run_folder import job, summary
from tests.slurm.jobs import QUICKSTART, SHORT, assert_ok, sft, status, wait_for

pytestmark = pytest.mark.slurm
ONE_NODE = ["--nodes", "1", "--procs-per-node", "1"]


def test_a_sweep_is_one_job_array_and_its_winner_reproduces(env, slurm_cluster,
                                                             tmp_path) -> None:
    sweep_dir = tmp_path / "sweep"
    result = sft(env, "sweep", QUICKSTART, *ONE_NODE, "--sweep-dir", sweep_dir,
                 "--grid", "train.lr=1e-4,5e-4", "--grid", "train.seed=1,2",
                 "--max-parallel", "2", *SHORT)
    assert_ok(result)
    folder = SweepFolder(sweep_dir)
    record = SweepRecord.read(folder.record)
    array = JobRecord.read(folder.job).job_id
    assert len(record.points) == 4 and array is not None
    assert f"submitted job array {array}: 4 task(s), at most 2 at a time" in result.stderr
    script = folder.job_script.read_text()
    assert "#SBATCH --array=0-3%2" in script and "#SBATCH --nodes=1" in script
    tasks = subprocess.run(["scontrol", "show", "job", "-o", array], env=slurm_cluster,
                           capture_output=True, text=True, check=True).stdout
    assert len(re.findall(rf"ArrayJobId={array} ", tasks)) >= 1
    runs = [folder.point(point) for point in record.points]
    assert [job(run.path).job_id for run in runs] == [f"{array}_{i}" for i in range(4)]

    def all_completed() -> bool:
        states = sft(env, "status", sweep_dir).stdout
        return states.count(": COMPLETED") == 4

    wait_for(all_completed, 900, "the 4 tasks to complete", 3)
    shown = sft(env, "leaderboard", sweep_dir, "--metric", "eval_loss")
    assert_ok(shown)
    board = Leaderboard.read(folder.leaderboard)
    assert board.metric == "loss" and board.lower_is_better
    assert [e.state for e in board.entries] == ["COMPLETED"] * 4, shown.stderr
    values = [e.value for e in board.entries]
    assert values == sorted(values) and len(set(values)) > 1
    assert {e.point.run for e in board.entries} == {p.run for p in record.points}
    for entry in board.entries:
        assert entry.value == summary(folder.point(entry.point).path).eval["loss"]
    for lr, seed in (("1e-4", "1"), ("5e-4", "2")):
        assert any(e.point.settings == {"train.lr": lr, "train.seed": seed}
                   for e in board.entries)
    assert folder.picture.is_file()
    # best.toml is the winner's resolved recipe: the same run again gives the same result
    winner = summary(folder.point(board.entries[0].point).path)
    again = tmp_path / "again"
    assert_ok(sft(env, folder.best, *ONE_NODE, "--run-dir", again, "--wait", "--quiet"))
    assert summary(again).eval == winner.eval
    # Slurm forgets finished jobs (MinJobAge) where no accounting keeps them: the run folders
    # are the truth. Job ids Slurm never knew stand for forgotten ones.
    for index, run in enumerate(runs):
        dataclasses.replace(job(run.path), job_id=f"999999_{index}").write(run.job)
    dataclasses.replace(JobRecord.read(folder.job), job_id="999999").write(folder.job)
    assert status(env, runs[0].path).state.startswith("COMPLETED")
    assert sft(env, "status", sweep_dir).stdout.count(": COMPLETED") == 4
    assert_ok(sft(env, "leaderboard", sweep_dir, "--metric", "eval_loss"))
    assert [e.state for e in Leaderboard.read(folder.leaderboard).entries] == ["COMPLETED"] * 4
