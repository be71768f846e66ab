"""`python -m launcher.backends.preflight_verdict RUN_DIR --exit CODE`, run by job.sbatch when the
preflight before training failed. With slurm.exclude_bad_nodes, once per run, the job is
submitted again without the nodes logs/preflight.json names (exit 0: this job's end is not the
run's); otherwise the job ends (exit 2) with job.json's final state PREFLIGHT, its reason the
named nodes, each with the check it failed and the figure."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from launcher.backends.slurm import Refused, sbatch
from launcher.contract.job import Exclusion, FinalState, JobRecord, utc_now
from launcher.contract.preflight import PreflightResult
from launcher.contract.records import ContractError
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import BackendKind, ExitCode
from launcher.recipe.load import load_recipe


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


def decide(folder: RunFolder, code: int, job_id: str) -> tuple[ExitCode, str]:
    """Resubmit without the named nodes (OK) or end the job (USAGE); job.json records which,
    and the line returned says it."""
    result, why = verdict(folder, code)
    record = JobRecord.read_if_exists(folder.job) or JobRecord(
        backend=BackendKind.SLURM, submitted=True, time=utc_now(), job_id=job_id)  # by hand
    nodes = tuple(sorted({f.host for f in result.findings})) if result else ()
    if nodes and load_recipe(folder.recipe).slurm.exclude_bad_nodes and not record.exclusions:
        excluded = Exclusion(job_id=job_id, nodes=nodes, reason=why, time=utc_now())
        try:
            new_id = sbatch(folder.path, folder.job_script.name, [],
                            [f"--exclude={','.join(nodes)}"])
        except Refused as err:
            why = f"{why}; resubmitting without {', '.join(nodes)} failed: {err.message}"
        else:
            dataclasses.replace(record, job_id=new_id, exclusions=(excluded,)).write(folder.job)
            return ExitCode.OK, f"{excluded.describe()} them as job {new_id}"
    dataclasses.replace(record, final_state=FinalState.PREFLIGHT, final_reason=why).write(
        folder.job)
    return ExitCode.USAGE, f"the preflight failed, nothing was trained: {why}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher.backends.preflight_verdict",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--exit", type=int, required=True, help="the preflight's exit code")
    args = parser.parse_args(argv)
    code, line = decide(RunFolder(args.run_dir.resolve()), args.exit,
                        os.environ.get("SLURM_JOB_ID", "?"))
    print(f"sft-launch: {line}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
