"""job.json's record of every start of a Slurm job, and of a requeue Slurm made by itself."""

from __future__ import annotations

from pathlib import Path

from launcher.backends.job_start import record_start
from launcher.contract.job import Allocation, JobRecord, Requeue
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import BackendKind


def down(node: str) -> str:
    """n2 failed; the other nodes of the allocation before are merely busy or idle."""
    return "DOWN+NOT_RESPONDING: Not responding" if node == "n2" else "IDLE"


def folder_with(tmp_path: Path, record: JobRecord) -> RunFolder:
    folder = RunFolder(tmp_path)
    folder.checkpoints.mkdir(parents=True)
    record.write(folder.job)
    return folder


def submitted(**fields: object) -> JobRecord:
    return JobRecord(backend=BackendKind.SLURM, submitted=True, time="t", job_id="7", **fields)


def test_the_first_start_is_recorded_and_says_nothing(tmp_path: Path) -> None:
    folder = folder_with(tmp_path, submitted())
    assert record_start(folder, 0, ("n1", "n2"), down) is None
    record = JobRecord.read(folder.job)
    assert [(a.restart, a.nodes) for a in record.allocations] == [(0, ("n1", "n2"))]
    assert record.requeues == ()


def test_slurms_own_requeue_names_the_node_lost(tmp_path: Path) -> None:
    folder = folder_with(tmp_path, submitted(
        allocations=(Allocation(restart=0, time="t", nodes=("n1", "n2", "n4")),)))
    said = record_start(folder, 1, ("n1", "n3", "n5"), down)
    (requeue,) = JobRecord.read(folder.job).requeues
    assert requeue.signal == "NODE_FAIL" and requeue.restart == 0
    assert requeue.cause == ("Slurm requeued the job after node n2 failed "
                             "(DOWN+NOT_RESPONDING: Not responding)")
    assert said == f"{requeue.cause}; resuming from step 0 on n1, n3, n5"  # n4: idle, not named


def test_a_requeue_sft_launch_asked_for_is_not_recorded_twice(tmp_path: Path) -> None:
    asked = Requeue(restart=0, time="t", signal="USR1", checkpoint_step=4)
    folder = folder_with(tmp_path, submitted(
        requeues=(asked,), allocations=(Allocation(restart=0, time="t", nodes=("n1", "n2")),)))
    assert record_start(folder, 1, ("n1", "n2"), down) is None
    record = JobRecord.read(folder.job)
    assert record.requeues == (asked,) and len(record.allocations) == 2
