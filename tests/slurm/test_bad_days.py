"""A cluster's bad days on the real test cluster: a real time limit, W&B with a key and no route
from the nodes, a requeue that would make no progress, the requeue limit, a stalled rank."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from launcher.contract.events import Hung, Started, Stopped, TrackingOffline, TrainLogged
from launcher.contract.heartbeat import Heartbeat
from launcher.contract.job import FinalState
from launcher.contract.run_folder import RunFolder
from tests.conftest import SFT_LAUNCH, cli_env
from tests.helpers.processes import processes_in, wait_for_event, wait_gone
from tests.helpers.run_folder import events, job, of_kind, rank_reports, summary
from tests.helpers.wandb_file import find_run_files, logged_steps, read_run_id
from tests.slurm.jobs import (
    NO_PREFLIGHT,
    NO_TRACKING,
    QUICKSTART,
    REPO,
    SHORT,
    TWO_NODES,
    assert_ok,
    ended,
    job_log,
    sft,
    signal_batch,
    wait_for,
)

pytestmark = pytest.mark.slurm
KEY = "0123456789abcdef" * 2 + "01234567"  # a well-formed W&B key that no server accepts
# 125 steps of ~1 s on two 1-CPU nodes.
LONG = ["--set", "data.max_train_samples=4000", "--set", "data.max_eval_samples=64",
        "--set", "data.group_by_length=false",  # the step times measured below
        "--set", "train.log_every=1", "--set", "slurm.cpus_per_task=1",
        "--set", 'slurm.time="00:10:00"', "--quiet", *NO_PREFLIGHT]
# 80 steps, more than what one 2-minute allocation trains between its start-up and Slurm's
# USR1, 30 s (Slurm checks limits every 30 s) ahead of the limit (~47 steps in 79 s measured,
# up to ~75 seen): one requeue, and a second allocation that ends by itself.
TIME_LIMITED = ["--set", "data.max_train_samples=6400", "--set", "train.max_steps=80",
                "--set", 'slurm.time="00:02:00"', "--set", "slurm.signal_grace_s=30"]


def test_a_time_limited_job_finishes_by_itself_with_one_offline_wandb_run(env, tmp_path) -> None:
    run_dir, reference = tmp_path / "run", tmp_path / "reference"
    # The same run without a time limit, locally on 2 processes, for the final weights.
    peer = subprocess.run([*SFT_LAUNCH, QUICKSTART, "--backend", "local", "--run-dir",
                           reference, *LONG, *TIME_LIMITED, "--set", "tracking.mode=disabled"],
                          cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=900)
    assert peer.returncode == 0, peer.stderr
    keyed = {**env, "WANDB_API_KEY": KEY}
    result = sft(keyed, QUICKSTART, *TWO_NODES, "--run-dir", run_dir, "--wait", *LONG,
                 *TIME_LIMITED, "--set", "tracking.timeout_s=10", timeout=1800)
    assert_ok(result)
    record = job(run_dir)
    assert len(record.requeues) >= 1, record
    found = events(run_dir)
    starts = of_kind(found, Started)
    assert len(starts) == len(record.requeues) + 1
    for start in starts[1:]:  # each rerun resumes at most one step behind where training was
        before = [e.step for e in of_kind(found[:found.index(start)], TrainLogged)]
        assert start.step >= max(before) - 1, (start, max(before))
    assert all(s.signal == "SIGUSR1" for s in of_kind(found, Stopped))
    assert summary(run_dir).steps == starts[0].total_steps
    # W&B: the nodes have no route to it; every start logged offline into one run id.
    assert len(of_kind(found, TrackingOffline)) == len(starts)
    files = find_run_files(run_dir / "wandb")
    assert len(files) == len(starts) and len({read_run_id(f) for f in files}) == 1
    assert set(logged_steps(run_dir / "wandb", "train/loss")) == set(
        range(1, starts[0].total_steps + 1))
    for path in run_dir.rglob("*"):
        assert not path.is_file() or KEY.encode() not in path.read_bytes(), path
    assert KEY not in result.stdout + result.stderr
    # The same final weights as without a time limit.
    ours = {r.final_weights_sha256 for r in rank_reports(run_dir)}
    assert len(ours) == 1 and ours == {r.final_weights_sha256 for r in rank_reports(reference)}


def test_a_requeue_without_progress_ends_the_job(env, slurm_cluster, tmp_path) -> None:
    """The time-limit warning arrives while the job's set-up lines still run: no worker starts,
    and the job ends instead of requeueing itself for ever."""
    run_dir = tmp_path / "run"
    setup = '["echo setup-running", "sleep 10"]'
    assert_ok(sft(env, QUICKSTART, *TWO_NODES, "--run-dir", run_dir, *SHORT,
                  "--set", f"slurm.setup={setup}"))
    log = RunFolder(run_dir).slurm_log(str(job(run_dir).job_id))
    wait_for(lambda: log.is_file() and "setup-running" in log.read_text(), 120,
             "the set-up to run", 0.2)
    signal_batch(slurm_cluster, run_dir, "USR1")
    state = ended(env, run_dir)
    assert state.startswith("FAILED (NO_PROGRESS: USR1 arrived before"), state
    record = job(run_dir)
    assert record.final_state is FinalState.NO_PROGRESS and not record.requeues
    assert "not requeued, NO_PROGRESS" in job_log(run_dir)
    assert not (run_dir / "logs" / "rank-0.json").exists()  # no worker was started


def test_max_requeues_ends_the_job(env, slurm_cluster, tmp_path) -> None:
    run_dir = tmp_path / "run"
    assert_ok(sft(env, QUICKSTART, *TWO_NODES, "--run-dir", run_dir, *LONG, *NO_TRACKING,
                  "--set", "slurm.max_requeues=0"))
    wait_for_event(run_dir, lambda e: isinstance(e, TrainLogged) and e.step >= 2)
    signal_batch(slurm_cluster, run_dir, "USR1")
    state = ended(env, run_dir)
    assert state.startswith("FAILED (REQUEUE_LIMIT: requeued 0 times already"), state
    stop = of_kind(events(run_dir), Stopped)[0]
    assert (run_dir / stop.checkpoint / "manifest.json").is_file()
    assert job(run_dir).final_state is FinalState.REQUEUE_LIMIT


def test_a_stopped_worker_ends_the_job_on_every_node(env, tmp_path) -> None:
    run_dir = tmp_path / "run"
    assert_ok(sft(env, QUICKSTART, *TWO_NODES, "--run-dir", run_dir, *LONG, *NO_TRACKING,
                  "--set", "train.hang_timeout_s=30"))
    wait_for_event(run_dir, lambda e: isinstance(e, TrainLogged) and e.step >= 2)
    victim = Heartbeat.read(RunFolder(run_dir).heartbeat(1))
    os.kill(victim.pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    state = ended(env, run_dir, timeout=300)
    took = time.monotonic() - stopped_at
    assert state.startswith("FAILED"), state
    assert took < 90, f"{took:.0f} s"
    hung = of_kind(events(run_dir), Hung)[0]
    assert [(r.rank, r.host) for r in hung.stalled] == [(1, victim.host)] == [(1, "n2")]
    assert "rank 1 (host n2" in job_log(run_dir)
    assert "most recent call first" in (run_dir / "logs" / "stacks-rank-0.txt").read_text()
    assert not wait_gone(lambda: processes_in(run_dir), 30), "a worker was left running"
