"""`python -m launcher.backends.requeue RUN_DIR --signal SIG`, run by job.sbatch after its
workers stopped on a signal: requeue the job (exit 0), or end it (exit 1), or nothing to do
because the run completed (exit 3). The decision and its reason go into job.json.

A job is requeued only when it made progress: a newer complete checkpoint than at its last
(re)start. Otherwise, or once `slurm.max_requeues` requeues were made, it ends with a final
state that `sft-launch status` shows, instead of restarting forever.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from enum import IntEnum
from pathlib import Path

from launcher.contract.checkpoints import newest_step
from launcher.contract.job import FinalState, JobRecord, Requeue, utc_now
from launcher.contract.run_folder import RunFolder
from launcher.recipe.load import load_recipe


class Decision(IntEnum):
    REQUEUE = 0
    END = 1
    COMPLETED = 3


def decide(folder: RunFolder, signal: str, restart: int) -> tuple[Decision, str]:
    """What to do with the job, and the line that says so; job.json records it."""
    if folder.summary.exists():
        return Decision.COMPLETED, "the run completed: nothing to requeue"
    recipe = load_recipe(folder.recipe)
    record = JobRecord.of_job(folder.job)
    step = newest_step(folder.checkpoints)
    previous = record.requeues[-1].checkpoint_step if record.requeues else record.start_step
    final, reason = None, ""
    if step <= previous:
        final = FinalState.NO_PROGRESS
        reason = (f"{signal} arrived before this allocation made progress: the newest complete "
                  f"checkpoint is still step {previous}; give the job more time "
                  f"(slurm.time = {recipe.slurm.time}, checkpoint {recipe.slurm.signal_grace_s} s "
                  "before its end) and resume it with --resume")
    elif len(record.requeues) >= recipe.slurm.max_requeues:
        final = FinalState.REQUEUE_LIMIT
        reason = (f"requeued {len(record.requeues)} times already (slurm.max_requeues = "
                  f"{recipe.slurm.max_requeues}); resume it with --resume")
    if final is not None:
        dataclasses.replace(record, final_state=final, final_reason=reason).write(folder.job)
        return Decision.END, f"not requeued, {final}: {reason}"
    requeue = Requeue(restart=restart, time=utc_now(), signal=signal, checkpoint_step=step)
    dataclasses.replace(record, requeues=(*record.requeues, requeue)).write(folder.job)
    return Decision.REQUEUE, (f"requeued ({len(record.requeues) + 1} of at most "
                              f"{recipe.slurm.max_requeues}): the rerun resumes from step {step}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher.backends.requeue",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--signal", required=True, help="what stopped the workers (USR1, TERM)")
    args = parser.parse_args(argv)
    restart = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    decision, line = decide(RunFolder(args.run_dir.resolve()), args.signal, restart)
    print(f"sft-launch: {line}", flush=True)
    return decision


if __name__ == "__main__":
    sys.exit(main())
