"""`python -m launcher.backends.local_array SWEEP_DIR RUN_DIR...`, started by the local backend's
`submit_array`: runs the run folders one after another, each to its end, as the local backend
runs one (every point's job.json names its own process group).

SIGTERM: the running point checkpoints and stops, and no later point starts; SIGINT: the running
point is killed at once. A point that stopped on a signal (`sft-launch cancel` of the point) ends
the sweep too. At its end it records its exit code in the sweep's job.json: 0 when every point
ran, 75 (`ExitCode.STOPPED`) when it stopped before.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
from pathlib import Path

from launcher.backends.local import STOP_WAIT_S, LocalBackend, signal_group, wait_until_gone
from launcher.contract.job import JobRecord, utc_now
from launcher.contract.run_folder import RunFolder
from launcher.contract.sweep import SweepFolder
from launcher.contract.vocabulary import ExitCode, JobState


def run_all(sweep: SweepFolder, runs: list[RunFolder]) -> ExitCode:
    """Each run to its end, in order, until one stops on a signal or this process is asked to
    stop; records the outcome in the sweep's job.json."""
    backend = LocalBackend()
    asked: list[int] = []
    running: list[int] = []  # the process group of the point that runs now

    def stop(signum: int, _frame: object) -> None:
        asked.append(signum)
        for pgid in running:
            signal_group(pgid, signal.SIGKILL if signum == signal.SIGINT else signal.SIGTERM)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    code = ExitCode.OK
    for run in runs:
        if asked:
            code = ExitCode.STOPPED
            break
        backend.submit(run, resume=False)
        proc = backend.process(run)
        assert proc is not None
        running.append(proc.pid)
        if asked:  # the signal came while the point started
            stop(asked[-1], None)
        proc.wait()
        wait_until_gone(proc.pid, STOP_WAIT_S)  # a launcher's children may outlive it
        running.clear()
        state = backend.status(run).state  # records its exit code in its job.json
        print(f"{run.path.name}: {state}", flush=True)
        if state is JobState.STOPPED:
            code = ExitCode.STOPPED
            break
    record = JobRecord.read_if_exists(sweep.job)
    if record is not None:
        dataclasses.replace(record, exit_code=int(code), ended=utc_now()).write(sweep.job)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher.backends.local_array",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("run_dirs", type=Path, nargs="+")
    args = parser.parse_args(argv)
    return run_all(SweepFolder(args.sweep_dir), [RunFolder(path) for path in args.run_dirs])


if __name__ == "__main__":
    sys.exit(main())
