"""`python -m launcher.backends.job_start RUN_DIR`, run by job.sbatch as each allocation of the
job starts: job.json records it (restart count, time, nodes). A restart sft-launch did not ask
for (no requeue recorded by the allocation before) is Slurm's own: it requeued the job because
a node of that allocation failed (`--requeue`); the requeue is recorded with the nodes lost and
what Slurm says of them, so that `status` tells it."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import launcher.backends.slurm_commands as slurm
from launcher.contract.checkpoints import newest_step
from launcher.contract.job import Allocation, JobRecord, Requeue, utc_now
from launcher.contract.run_folder import RunFolder

# Node states (Slurm's words) of a node that failed, not one merely left out of the new allocation.
UNWELL = re.compile(r"DOWN|DRAIN|FAIL|NOT_RESPONDING|unknown to Slurm")


def record_start(folder: RunFolder, restart: int, nodes: tuple[str, ...],
                 node_said: Callable[[str], str]) -> str | None:
    """Record this allocation; Slurm's own requeue before it too, in the line returned (None
    when sft-launch asked for the requeue, or on the first start)."""
    record = JobRecord.of_job(folder.job)
    requeues, said = record.requeues, None
    if restart > 0 and not any(r.restart == restart - 1 for r in requeues):
        before = record.allocations[-1].nodes if record.allocations else ()
        said_of = {node: node_said(node) for node in before if node not in nodes}
        lost = [node for node, state in said_of.items() if UNWELL.search(state)]
        cause = ("Slurm requeued the job after " + ", ".join(
            f"node {node} failed ({said_of[node]})" for node in lost) if lost else
            "Slurm requeued the job (a node failure, or a requeue by hand)")
        step = newest_step(folder.checkpoints)
        requeues = (*requeues, Requeue(restart=restart - 1, time=utc_now(),
                                       signal="NODE_FAIL" if lost else "SLURM",
                                       checkpoint_step=step, cause=cause))
        said = f"{cause}; resuming from step {step} on {', '.join(nodes)}"
    dataclasses.replace(record, requeues=requeues, allocations=(
        *record.allocations, Allocation(restart=restart, time=utc_now(), nodes=nodes))
    ).write(folder.job)
    return said


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher.backends.job_start",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    folder = RunFolder(parser.parse_args(argv).run_dir.resolve())
    nodes = slurm.hostnames(os.environ["SLURM_JOB_NODELIST"])
    said = record_start(folder, int(os.environ.get("SLURM_RESTART_COUNT", "0")), nodes,
                        slurm.node_said)
    if said:
        print(f"sft-launch: {said}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
