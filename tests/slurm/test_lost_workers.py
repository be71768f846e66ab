"""A worker lost on the real test cluster: kill -9 of node 2's worker after a checkpoint. The
nodes' supervisors restart every worker in the same allocation from the newest checkpoint; the
job ends COMPLETED by itself with the weights of the same job never interrupted, and says which
rank died first, where, and of what. A whole node lost (its slurmd and processes killed): Slurm
requeues the job, which completes on the nodes left, the same weights, and says which node."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from launcher.contract.events import Started, TrainLogged, WorkersDied
from launcher.contract.heartbeat import Heartbeat
from launcher.contract.run_folder import RunFolder
from tests.helpers.processes import processes_in, wait_for_event, wait_gone
from tests.helpers.run_folder import events, job, of_kind, rank_reports, summary
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
    wait_for,
)

pytestmark = pytest.mark.slurm
SAVE_EVERY = 2
SAVING = ["--set", f"train.save_every={SAVE_EVERY}", "--set", "train.keep_checkpoints=4",
          *NO_TRACKING]


@pytest.fixture(scope="module")
def reference(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same 2-node job, never interrupted."""
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    assert_ok(sft(env, QUICKSTART, *TWO_NODES, "--run-dir", run_dir, "--wait", *SHORT, *SAVING,
                  *NO_PREFLIGHT))
    return run_dir


# One step here (3 measured for the issue: steps 3, 4, 5), to keep `make test` short; the test
# of a node killed twice below kills after step 3 and step 5.
@pytest.mark.parametrize("trained", [SAVE_EVERY + 1])
def test_a_worker_killed_on_node_2_is_restarted_and_the_job_completes(
        env: dict[str, str], reference: Path, tmp_path: Path, trained: int) -> None:
    """kill -9 once the job logged step `trained` (a step or so later: the kill is real)."""
    run_dir = tmp_path / "run"
    assert_ok(sft(env, QUICKSTART, *TWO_NODES, "--run-dir", run_dir, *SHORT, *SAVING,
                  *NO_PREFLIGHT))
    wait_for_event(run_dir, lambda e: isinstance(e, TrainLogged) and e.step >= trained)
    victim = Heartbeat.read(RunFolder(run_dir).heartbeat(1))
    os.kill(victim.pid, signal.SIGKILL)
    state = ended(env, run_dir, timeout=600)
    assert state.startswith("COMPLETED"), state
    assert f"restarted 1 time(s), last after rank 1 (host n2, pid {victim.pid}) was killed by " \
        "SIGKILL" in state, state
    (restart,) = job(run_dir).restarts
    assert (restart.cause.rank, restart.cause.host, restart.cause.signal) == (1, "n2", "SIGKILL")
    died = of_kind(events(run_dir), WorkersDied)
    assert sorted(e.node for e in died) == [0, 1] and all(e.restart for e in died)
    assert f"sft-launch supervisor: rank 1 (host n2, pid {victim.pid})" in job_log(run_dir)
    # the whole job again, from the newest checkpoint: only the steps since it redone
    resumed_from = [e.step for e in of_kind(events(run_dir), Started)][-1]
    assert resumed_from == restart.checkpoint_step >= SAVE_EVERY
    logged = sorted(e.step for e in of_kind(events(run_dir), TrainLogged))
    redone = sorted({s for s in logged if logged.count(s) == 2})
    assert redone == list(range(resumed_from + 1, resumed_from + 1 + len(redone)))
    assert sorted(set(logged)) == list(range(1, summary(run_dir).steps + 1))
    assert len(redone) < 2 * SAVE_EVERY and max(redone, default=trained) >= trained
    assert {r.final_weights_sha256 for r in rank_reports(run_dir)} == {
        r.final_weights_sha256 for r in rank_reports(reference)}
    assert not wait_gone(lambda: processes_in(run_dir), 30), "a worker was left running"


def test_a_node_lost_mid_run_is_left_behind_and_the_job_completes(
        env: dict[str, str], reference: Path, tmp_path: Path) -> None:
    """n2's slurmd and every process on it killed (-9) after a checkpoint: Slurm marks n2 down
    (SlurmdTimeout, 60 s here) and requeues the job (`--requeue`), which resumes on two other
    nodes and completes with the weights of the job never interrupted."""
    run_dir = tmp_path / "run"
    assert_ok(sft(env, QUICKSTART, *TWO_NODES, "--run-dir", run_dir, *SHORT, *SAVING))
    wait_for_event(run_dir, lambda e: isinstance(e, TrainLogged) and e.step >= SAVE_EVERY + 1)
    first = job(run_dir).allocations
    assert [a.nodes for a in first] == [("n1", "n2")], first
    try:
        subprocess.run(["bash", "-c", "ip netns pids sft-n2 | xargs -r kill -9"], check=True,
                       timeout=30)
        state = ended(env, run_dir, timeout=600)
    finally:
        subprocess.run(["bash", str(REPO / "slurm" / "testcluster.sh"), "revive", "2"],
                       timeout=120)
    assert state.startswith("COMPLETED"), state
    record = job(run_dir)
    (requeue,) = record.requeues
    assert requeue.signal == "NODE_FAIL" and requeue.cause.startswith(
        "Slurm requeued the job after node n2 failed (DOWN"), requeue  # n2 alone
    assert f"requeued 1 time(s), last: {requeue.cause}" in state, state
    assert [a.restart for a in record.allocations] == [0, 1]
    assert "n2" not in record.allocations[1].nodes
    resumed_from = [e.step for e in of_kind(events(run_dir), Started)][-1]
    assert resumed_from == requeue.checkpoint_step >= SAVE_EVERY
    assert "n2" not in {r.hostname for r in rank_reports(run_dir)}
    assert {r.final_weights_sha256 for r in rank_reports(run_dir)} == {
        r.final_weights_sha256 for r in rank_reports(reference)}


def test_a_node_whose_worker_dies_twice_is_left_behind(
        env: dict[str, str], reference: Path, tmp_path: Path) -> None:
    """n2's worker killed after step 3, then again after step 5 of the restarted workers: the
    first is restarted in place, the second leaves n2 behind: the job is submitted again
    without it, resumes, and completes with the weights of the job never interrupted."""
    run_dir = tmp_path / "run"
    assert_ok(sft(env, QUICKSTART, *TWO_NODES, "--run-dir", run_dir, *SHORT, *SAVING,
                  *NO_PREFLIGHT))
    first_job = job(run_dir).job_id
    for attempt, after in enumerate((SAVE_EVERY + 1, SAVE_EVERY + 3)):
        wait_for(lambda a=attempt, s=after: trained_in(run_dir, a, s), 300,
                 f"step {after} of attempt {attempt}")
        victim = Heartbeat.read(RunFolder(run_dir).heartbeat(1))
        assert victim.host == "n2", victim
        os.kill(victim.pid, signal.SIGKILL)
    state = ended(env, run_dir, timeout=600)
    assert state.startswith("COMPLETED"), state
    record = job(run_dir)
    (excluded,) = record.exclusions
    assert (excluded.job_id, excluded.nodes) == (first_job, ("n2",))
    assert "died first a second time" in excluded.reason and record.job_id != first_job
    assert f"job {first_job} left n2 behind" in state, state
    assert [r.cause.host for r in record.restarts] == ["n2"]
    assert record.allocations[0].nodes == ("n1", "n2")
    assert "n2" not in record.allocations[-1].nodes
    assert "n2" not in {r.hostname for r in rank_reports(run_dir)}
    assert {r.final_weights_sha256 for r in rank_reports(run_dir)} == {
        r.final_weights_sha256 for r in rank_reports(reference)}


def trained_in(run_dir: Path, attempt: int, step: int) -> bool:
    """The workers started for the `attempt`-th time (0: the first) logged `step` or later."""
    found = events(run_dir)
    starts = [i for i, e in enumerate(found) if isinstance(e, Started)]
    return len(starts) == attempt + 1 and any(
        isinstance(e, TrainLogged) and e.step >= step for e in found[starts[-1]:])
