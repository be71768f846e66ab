"""The supervisor's rules: which death is named, when a restart is made, the exit code passed
on (the restarts themselves run for real in tests/e2e/test_restarts.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.backends.bad_nodes import NOTHING_TO_DO, after_failures
from launcher.contract.job import (
    AttemptVerdict,
    FinalState,
    JobRecord,
    Restart,
    WorkerDeath,
    first_death,
)
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import BackendKind, ExitCode
from launcher.worker.supervisor import (
    Attempt,
    Supervisor,
    _attempt_code,
    _own_port,
    _settled,
    verdict,
)


def death(rank: int, code: int, signal: str | None = None, time: float = 100.0) -> WorkerDeath:
    return WorkerDeath(rank=rank, host="n1", pid=1000 + rank, exit_code=code, signal=signal,
                       time=time)


def test_the_dead_rank_is_named_before_the_survivors_it_took_down() -> None:
    killed, terminated, raised = death(3, 137, "SIGKILL"), death(0, 143, "SIGTERM"), death(1, 1)
    assert first_death((terminated, raised, killed)) == killed
    assert first_death((raised, death(2, 7))) == death(2, 7)  # an unusual exit code
    assert first_death((death(1, 1, time=101), death(0, 1, time=102))).rank == 1  # earliest
    assert first_death((terminated, raised)) == terminated  # same time: lowest rank
    assert killed.describe() == "rank 3 (host n1, pid 1003) was killed by SIGKILL"
    assert raised.describe() == "rank 1 (host n1, pid 1001) exited with code 1"


def test_restarts_are_bounded_and_need_progress() -> None:
    assert verdict(0, 3, step=4, step_at_restart=None).restart
    assert verdict(1, 3, step=8, step_at_restart=4).restart
    no_progress = verdict(1, 3, step=4, step_at_restart=4)
    assert not no_progress.restart and no_progress.final_state is FinalState.NO_PROGRESS
    limit = verdict(3, 3, step=20, step_at_restart=16)
    assert not limit.restart and limit.final_state is FinalState.RESTART_LIMIT
    assert "train.max_restarts = 3" in limit.reason
    assert not verdict(0, 0, step=4, step_at_restart=None).restart


def test_a_refusal_the_launcher_killed_the_others_after_is_passed_on() -> None:
    """Rank 0 refuses bad data; rank 1, waiting in a barrier, ignores TERM (a stop request)
    and is killed 30 s later: the attempt is the refusal, not a crash to restart."""
    refused, killed = death(0, ExitCode.REFUSED, time=100.0), death(1, 137, "SIGKILL", 131.0)
    assert _attempt_code((refused, killed)) == ExitCode.REFUSED
    assert _settled((refused, killed)).deaths == ()
    assert _attempt_code((death(0, ExitCode.REFUSED, time=131.0),
                          death(1, 137, "SIGKILL", 100.0))) == 137  # killed first: a crash


def test_a_stop_or_a_refusal_is_passed_on_a_death_as_its_code() -> None:
    assert _attempt_code((death(0, ExitCode.STOPPED), death(1, ExitCode.STOPPED))) == 75
    assert _attempt_code((death(0, ExitCode.HUNG), death(1, 143, "SIGTERM"))) == 124
    assert _attempt_code((death(0, ExitCode.REFUSED),)) == ExitCode.REFUSED
    assert _attempt_code((death(0, 143, "SIGTERM"), death(1, 137, "SIGKILL"))) == 137
    assert _attempt_code((death(0, 1), death(1, ExitCode.STOPPED))) == 1
    # one worker ended on purpose, the launcher terminated the slower one: still on purpose
    assert _attempt_code((death(0, 143, "SIGTERM"), death(1, ExitCode.STOPPED))) == 75
    assert _attempt_code((death(0, 143, "SIGTERM"), death(1, ExitCode.NOT_SAVED))) == 74
    # Slurm's USR1 to a worker whose handler is gone (Python shutting down): a stop
    assert _attempt_code((death(0, 138, "SIGUSR1"), death(1, ExitCode.STOPPED))) == 75


def test_each_restart_meets_at_a_port_of_its_own() -> None:
    options = ["--config_file", "accelerate.yaml", "--main_process_port", "29500"]
    assert _own_port(options, 0) == options
    assert _own_port(options, 2)[-1] == "29502" and _own_port(options, 2)[:3] == options[:3]
    assert _own_port(["--config_file", "a.yaml"], 1) == ["--config_file", "a.yaml"]


def test_an_attempt_is_restarted_only_after_a_crash() -> None:
    killed = death(0, 137, "SIGKILL")
    assert _settled((killed,)) == Attempt(137, (killed,))
    # one process killed by Ctrl-C before its handler was in place: a stop, not a crash
    assert _settled((death(0, 130, "SIGINT"),)) == Attempt(ExitCode.STOPPED)
    assert _settled((death(0, ExitCode.NOT_SAVED),)) == Attempt(ExitCode.NOT_SAVED)


def on(host: str, rank: int = 1) -> WorkerDeath:
    return WorkerDeath(rank=rank, host=host, pid=4242, exit_code=137, signal="SIGKILL",
                       time=100.0)


def test_a_node_whose_workers_die_first_twice_is_left_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On Slurm, with several nodes: the second first death on n2 is no restart but a verdict
    that every node follows, and that job.sbatch turns into a job without n2."""
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    folder = RunFolder(tmp_path)
    folder.logs.mkdir(parents=True)
    once = Restart(attempt=1, time="t", checkpoint_step=2, cause=on("n2"))
    JobRecord(backend=BackendKind.SLURM, submitted=True, time="t", job_id="7",
              restarts=(once,)).write(folder.job)
    supervisor = Supervisor(folder, [], max_restarts=3, node=0, nodes=2)
    elsewhere = supervisor.decide(1, 4, (on("n1", 0),), verdict(1, 3, 4, 2), 137)
    assert elsewhere.restart and elsewhere.exclude is None
    assert len(JobRecord.read(folder.job).restarts) == 2
    again = supervisor.decide(2, 6, (on("n2"),), verdict(2, 3, 6, 4), 137)
    assert (again.restart, again.code, again.exclude) == (False, ExitCode.NODE_FAILED, "n2")
    assert "died first a second time" in again.reason
    assert AttemptVerdict.read(folder.attempt_verdict(2)) == again  # what the other nodes read
    record = JobRecord.read(folder.job)
    assert len(record.restarts) == 2 and record.final_state is None
    follower = Supervisor(folder, [], max_restarts=3, node=1, nodes=2)
    assert follower.node_0s_verdict(2) == again
    one_node = Supervisor(folder, [], max_restarts=3, node=0, nodes=1)
    assert one_node.decide(3, 8, (on("n2"),), verdict(2, 3, 8, 6), 137).restart


def test_no_node_left_behind_is_nothing_to_resubmit(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    assert after_failures(folder, "7")[0] == NOTHING_TO_DO
    folder.attempt_verdict(0).parent.mkdir(parents=True)
    AttemptVerdict(attempt=0, restart=True, code=137).write(folder.attempt_verdict(0))
    assert after_failures(folder, "7")[0] == NOTHING_TO_DO
