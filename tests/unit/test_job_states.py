"""Job states through the Backend protocol alone: Slurm's words as `JobState`s, the run folder as
the truth once Slurm forgot a job, and the local backend's array job (points one after another,
a failed point not stopping the rest, a cancelled one stopping them) followed by `waiting`."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from launcher.backends import backend_for
from launcher.contract.events import Stopped, TrainLogged
from launcher.contract.job import FinalState, JobRecord, utc_now
from launcher.contract.run_folder import RunFolder
from launcher.contract.sweep import SweepFolder
from launcher.contract.vocabulary import BackendKind, JobState
from launcher.ui.waiting import follow_array
from tests.conftest import REPO

FORGOTTEN = "slurm_load_jobs error: Invalid job id specified"


def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scontrol: str) -> None:
    """`scontrol` answering `scontrol` (a shell line), `sacct` without accounting."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("scontrol", scontrol),
                       ("sacct", "echo 'sacct: error: accounting storage is disabled' >&2; "
                                 "exit 1")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def slurm_run(tmp_path: Path, job_id: str = "4242") -> RunFolder:
    folder = RunFolder(tmp_path / "run")
    folder.logs.mkdir(parents=True)
    shutil.copyfile(REPO / "tests/golden/quickstart/plan.json", folder.plan)
    JobRecord(backend=BackendKind.SLURM, submitted=True, time=utc_now(),
              job_id=job_id).write(folder.job)
    return folder


def test_slurm_words_become_job_states(tmp_path, monkeypatch) -> None:
    folder = slurm_run(tmp_path)
    slurm = backend_for(BackendKind.SLURM)
    fake_slurm(tmp_path, monkeypatch, "echo 'JobId=4242 JobState=OUT_OF_MEMORY Reason=None "
               "ExitCode=0:125 RunTime=00:01:02 NodeList=n1'")
    status = slurm.status(folder)
    assert status.state is JobState.FAILED and not status.active
    assert status.shown() == "FAILED (OUT_OF_MEMORY, exit code 0:125)"
    (tmp_path / "bin/scontrol").write_text(
        "#!/bin/sh\necho 'JobId=4242 JobState=PENDING Reason=Resources ExitCode=0:0'\n")
    status = slurm.status(folder)
    assert status.state is JobState.PENDING and status.active
    assert status.shown() == "PENDING (Resources)"


def test_a_job_slurm_forgot_is_what_its_run_folder_says(tmp_path, monkeypatch) -> None:
    fake_slurm(tmp_path, monkeypatch, f"echo '{FORGOTTEN}' >&2; exit 1")
    folder = slurm_run(tmp_path)
    slurm = backend_for(BackendKind.SLURM)
    status = slurm.status(folder)
    assert status.state is JobState.UNKNOWN and "does not know job 4242" in status.detail
    with folder.events.open("a") as events:
        events.write(TrainLogged(step=3, loss=1.0, lr=1e-4, grad_norm=1.0, epoch=0.5).to_line())
        events.write(Stopped(step=3, signal="SIGTERM", checkpoint="checkpoints/step-3").to_line())
    assert slurm.status(folder).shown() == (
        "STOPPED (stopped on SIGTERM after step 3, with a complete checkpoint: "
        "checkpoints/step-3; --resume continues it)")
    record = JobRecord.read(folder.job)
    JobRecord(backend=record.backend, submitted=True, time=record.time, job_id="4242",
              final_state=FinalState.NO_PROGRESS, final_reason="USR1 came early").write(
                  folder.job)
    assert slurm.status(folder).shown() == "FAILED (NO_PROGRESS: USR1 came early)"
    folder.summary.write_text("{}\n")
    assert slurm.status(folder).state is JobState.COMPLETED


def local_points(sweep: SweepFolder, scripts: list[str]) -> list[RunFolder]:
    """Run folders whose launch.sh is `script` (run in the folder)."""
    runs = []
    for index, script in enumerate(scripts):
        run = RunFolder(sweep.path / f"point-{index:03d}")
        run.logs.mkdir(parents=True)
        run.launch_script.write_text(f'cd "$(dirname "$0")"\n{script}\n')
        runs.append(run)
    return runs


def test_a_local_array_runs_its_points_in_turn_past_a_failure(tmp_path) -> None:
    sweep = SweepFolder(tmp_path / "sweep")
    runs = local_points(sweep, ["echo '{}' > summary.json", "exit 3",
                                "echo '{}' > summary.json"])
    local = backend_for(BackendKind.LOCAL)
    assert "3 run(s), one after another" in local.submit_array(sweep, runs, 4)
    ended = [(run.path.name, status.shown()) for run, status in
             follow_array(sweep, runs, local, quiet=True)]
    assert ended == [("point-000", "COMPLETED"), ("point-001", "FAILED (exit code 3)"),
                     ("point-002", "COMPLETED")]
    assert local.array_status(sweep).state is JobState.COMPLETED
    assert JobRecord.read(sweep.job).exit_code == 0


def test_cancelling_a_local_array_stops_its_point_and_starts_no_other(tmp_path) -> None:
    sweep = SweepFolder(tmp_path / "sweep")
    runs = local_points(sweep, [  # the first checkpoints and stops on SIGTERM, as workers do
        "trap 'cat stopped.jsonl >> logs/events.jsonl; exit 75' TERM\n"
        "touch logs/started\nwhile true; do sleep 0.1; done",
        "echo '{}' > summary.json"])
    (runs[0].path / "stopped.jsonl").write_text(
        Stopped(step=2, signal="SIGTERM", checkpoint="checkpoints/step-2").to_line())
    local = backend_for(BackendKind.LOCAL)
    local.submit_array(sweep, runs, 1)
    deadline = time.monotonic() + 30
    while not (runs[0].logs / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "stopping the sweep" in local.cancel_array(sweep)
    ended = list(follow_array(sweep, runs, local, quiet=True))
    assert [(run, status.state) for run, status in ended] == [(runs[0], JobState.STOPPED)]
    assert local.status(runs[1]).state is JobState.NOT_SUBMITTED
    assert local.array_status(sweep).state is JobState.STOPPED
