"""`python -m launcher.backends.bad_nodes RUN_DIR (--preflight CODE | --failed-twice)`: job.sbatch's
answer to nodes that must not carry the job on.

- `--preflight CODE`, after a failed preflight: with slurm.exclude_bad_nodes, once per run, the
  job is submitted again without the nodes logs/preflight.json names (exit 0: this job's end is
  not the run's); otherwise the job ends (exit 2) with job.json's final state PREFLIGHT, its
  reason the named nodes, each with the check it failed and the figure.
- `--failed-twice`, after the workers ended: when node 0's supervisor left a node behind (its
  workers died first a second time: logs/attempts/), the job is submitted again without it,
  resuming from the newest complete checkpoint (exit 0); exit 3 when no node was left behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from launcher.backends.slurm import Refused, sbatch
from launcher.contract.job import (
    AttemptVerdict,
    Exclusion,
    FinalState,
    JobRecord,
    utc_now,
)
from launcher.contract.preflight import PreflightResult
from launcher.contract.records import ContractError
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import ExitCode
from launcher.recipe.load import load_recipe

NOTHING_TO_DO = 3


def verdict(folder: RunFolder, code: int) -> tuple[PreflightResult | None, str]:
    """The preflight's result and the bad nodes in one line (what its exit code says when it
    named none)."""
    try:
        result = PreflightResult.read_if_exists(folder.preflight)
    except ContractError:
        result = None
    if result is None or result.healthy:
        return None, (f"the preflight ended with exit code {code} before a verdict (a rank "
                      "failed or a node never started it): see the lines above in the job's log")
    return result, "; ".join(f"node {f.node} ({f.host}): {f.check}: {f.detail}"
                             for f in result.findings)


def resubmitted(folder: RunFolder, record: JobRecord, excluded: Exclusion,
                resume: bool) -> str:
    """Submit job.sbatch again without the nodes of `excluded` (and of earlier exclusions);
    job.json names the new job. The line that says so, or Refused."""
    nodes = sorted({*excluded.nodes, *(n for e in record.exclusions for n in e.nodes)})
    new_id = sbatch(folder.path, folder.job_script.name, ["--resume"] if resume else [],
                    [f"--exclude={','.join(nodes)}"])
    dataclasses.replace(record, job_id=new_id, exclusions=(*record.exclusions, excluded)
                        ).write(folder.job)
    return f"{excluded.describe()}: submitted again without, as job {new_id}"


def after_preflight(folder: RunFolder, code: int, job_id: str) -> tuple[ExitCode, str]:
    """Resubmit without the named nodes (OK) or end the job (USAGE); job.json records which,
    and the line returned says it."""
    result, why = verdict(folder, code)
    record = JobRecord.of_job(folder.job, job_id=job_id)
    nodes = tuple(sorted({f.host for f in result.findings})) if result else ()
    if nodes and load_recipe(folder.recipe).slurm.exclude_bad_nodes and not record.exclusions:
        excluded = Exclusion(job_id=job_id, nodes=nodes, reason=why, time=utc_now())
        try:
            return ExitCode.OK, resubmitted(folder, record, excluded, resume=False)
        except Refused as err:
            why = f"{why}; resubmitting without {', '.join(nodes)} failed: {err.message}"
    dataclasses.replace(record, final_state=FinalState.PREFLIGHT, final_reason=why).write(
        folder.job)
    return ExitCode.USAGE, f"the preflight failed, nothing was trained: {why}"


def after_failures(folder: RunFolder, job_id: str) -> tuple[int, str]:
    """Resubmit without the node node 0's supervisor left behind (OK); NOTHING_TO_DO when it
    left none; FAILED when Slurm refused the job without it (said in job.json)."""
    verdicts = sorted((AttemptVerdict.read(p) for p in folder.attempt_verdict(0).parent.glob(
        "attempt-*.json")), key=lambda v: v.attempt)
    if not verdicts or verdicts[-1].exclude is None:
        return NOTHING_TO_DO, "no node was left behind"
    last = verdicts[-1]
    record = JobRecord.of_job(folder.job, job_id=job_id)
    excluded = Exclusion(job_id=job_id, nodes=(last.exclude,), reason=last.reason,
                         time=utc_now())
    try:
        return ExitCode.OK, resubmitted(folder, record, excluded, resume=True)
    except Refused as err:
        why = f"{last.reason}; resubmitting without {last.exclude} failed: {err.message}"
        dataclasses.replace(record, final_state=FinalState.RESTART_LIMIT, final_reason=why
                            ).write(folder.job)
        return ExitCode.FAILED, why


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher.backends.bad_nodes",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--preflight", type=int, metavar="CODE", help="the preflight's exit code")
    which.add_argument("--failed-twice", action="store_true",
                       help="after the workers ended: was a node left behind?")
    args = parser.parse_args(argv)
    folder, job_id = RunFolder(args.run_dir.resolve()), os.environ.get("SLURM_JOB_ID", "?")
    code, line = (after_failures(folder, job_id) if args.failed_twice
                  else after_preflight(folder, args.preflight, job_id))
    if code != NOTHING_TO_DO:
        print(f"sft-launch: {line}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
