"""Data preparation as a job of its own on the real test cluster: prepare.sbatch tokenizes into
the shared cache first, the training job (--dependency=afterok) only reads it, a second
submission of the same data skips the preparation, and a preparation that fails ends the
training job before it takes any node, saying why."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.contract.events import Message, Started
from launcher.contract.run_folder import RunFolder
from tests.helpers.run_folder import events, job, of_kind, summary
from tests.slurm.jobs import (
    NO_PREFLIGHT,
    NO_TRACKING,
    QUICKSTART,
    SHORT,
    TWO_NODES,
    assert_ok,
    job_log,
    sft,
    status,
)

pytestmark = pytest.mark.slurm
# an entry no other test has cached
OWN_DATA = ["--set", "data.max_train_samples=160", *NO_PREFLIGHT, *NO_TRACKING]


def test_the_prep_job_runs_first_and_a_second_submission_skips_it(env, tmp_path) -> None:
    env = {**env, "SFT_LAUNCH_CACHE": str(tmp_path / "cache")}
    first, second = tmp_path / "first", tmp_path / "second"
    launched = sft(env, QUICKSTART, *TWO_NODES, "--run-dir", first, "--wait", *SHORT, *OWN_DATA)
    assert_ok(launched)
    prep_id = job(first).prep_job_id
    assert prep_id is not None and int(prep_id) < int(job(first).job_id)
    prep_log = RunFolder(first).prepare_log(prep_id).read_text()
    assert "examples cached in" in prep_log and "encoding the data" in prep_log
    (entry,) = (tmp_path / "cache" / "preprocessed").iterdir()
    training = job_log(first)
    assert f"cache hit, read the examples of {entry}" in training
    assert "encoding the data" not in training
    said = [e for e in events(first) if isinstance(e, Message | Started)]
    cached = next(i for i, e in enumerate(said) if "cached in" in getattr(e, "text", ""))
    started = next(i for i, e in enumerate(said) if isinstance(e, Started))
    assert cached < started, "training started before its data was prepared"
    assert summary(first).world_size == 2

    assert_ok(sft(env, QUICKSTART, *TWO_NODES, "--run-dir", second, "--wait", *SHORT, *OWN_DATA))
    assert job(second).prep_job_id is None
    assert any(f"data preparation: skipped, the cache entry {entry} is complete" in e.text
               for e in of_kind(events(second), Message))
    assert f"cache hit, read the examples of {entry}" in job_log(second)
    assert summary(second).eval["loss"] == summary(first).eval["loss"]


def test_a_failed_preparation_ends_the_training_job_before_it_starts(env, tmp_path) -> None:
    not_a_folder = tmp_path / "cache-is-a-file"
    not_a_folder.write_text("")
    env = {**env, "SFT_LAUNCH_CACHE": str(not_a_folder)}
    run_dir = tmp_path / "run"
    launched = sft(env, QUICKSTART, *TWO_NODES, "--run-dir", run_dir, "--wait", *SHORT, *OWN_DATA)
    assert launched.returncode != 0
    prep_id = job(run_dir).prep_job_id
    shown = status(env, run_dir)
    assert shown.state.startswith("CANCELLED"), shown
    assert f"its data preparation job {prep_id} ended FAILED" in shown.state, shown
    assert f"logs/prepare-{prep_id}.out" in launched.stdout + launched.stderr + shown.state
    assert not RunFolder(run_dir).rank_reports(), "a training rank started"
    assert not Path(RunFolder(run_dir).slurm_log(job(run_dir).job_id)).exists()
