"""The quickstart: samples/s, time to first step, token efficiency and dev accuracy, 2 processes
vs a 1-process peer.

Runs the real CLI (local backend) twice in this script, same recipe and steps, and reports the
absolute figures and the 2-vs-1 ratio.
    .venv/bin/python bench/quickstart_bench.py [--steps 40] [--full]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common import REPO, launch, train_events, write_report

from launcher.contract.reports import Summary
from launcher.contract.run_folder import RunFolder


@dataclass(frozen=True)
class Run:
    processes: int
    steps: int
    wall_s: float
    time_to_first_step_s: float
    train_samples_per_s: float
    token_efficiency: float | None  # real tokens / tokens computed
    eval_accuracy: float | None


def run(procs: int, steps: int | None, run_dir: Path) -> Run:
    """One quickstart run; figures from this script's clock and the run's own event log."""
    settings = [f"distributed.procs_per_node={procs}", "train.log_every=1"]
    if steps:
        settings.append(f"train.max_steps={steps}")
    started = time.time()
    launch(REPO / "recipes/quickstart.toml", run_dir, *settings)
    wall = time.time() - started
    first_step = train_events(run_dir)[0].time
    summary = Summary.read(RunFolder(run_dir).summary)
    return Run(processes=procs, steps=summary.steps, wall_s=round(wall, 2),
               time_to_first_step_s=round(first_step - started, 2),
               train_samples_per_s=summary.train_samples_per_s,
               token_efficiency=summary.token_efficiency,
               eval_accuracy=summary.eval.get("accuracy"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    parser.add_argument("--full", action="store_true", help="the whole quickstart (all steps)")
    args = parser.parse_args()
    steps = None if args.full else args.steps
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(procs, steps, Path(tmp) / f"p{procs}") for procs in (2, 1)]
    ratio = rows[0].train_samples_per_s / rows[1].train_samples_per_s
    table = ["| processes | steps | wall s | time to first step s | samples/s | token efficiency "
             "| eval acc |", "|---|---|---|---|---|---|---|"]
    table += [f"| {r.processes} | {r.steps} | {r.wall_s} | {r.time_to_first_step_s} "
              f"| {r.train_samples_per_s} | {r.token_efficiency} | {r.eval_accuracy} |"
              for r in rows]
    table.append(f"\nsamples/s, 2 processes vs 1: {ratio:.2f}x on {os.cpu_count()} CPU(s)")
    write_report("quickstart", {"runs": [asdict(r) for r in rows],
                                "samples_per_s_ratio_2_vs_1": round(ratio, 3)},
                 table)


if __name__ == "__main__":
    main()
