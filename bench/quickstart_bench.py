"""The quickstart: samples/s and time to first step, 2 processes vs a 1-process peer.

Runs the real CLI (local backend) twice in this script, same recipe and steps, and reports the
absolute figures and the 2-vs-1 ratio.
    .venv/bin/python bench/quickstart_bench.py [--steps 40] [--full]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from common import REPO, events, launch, read_json, write_report


def run(procs: int, steps: int | None, run_dir: Path) -> dict[str, float]:
    """One quickstart run; figures from this script's clock and the run's own event log."""
    settings = [f"distributed.procs_per_node={procs}", "train.log_every=1"]
    if steps:
        settings.append(f"train.max_steps={steps}")
    started = time.time()
    launch(REPO / "recipes/quickstart.toml", run_dir, *settings)
    wall = time.time() - started
    first_step = next(e["time"] for e in events(run_dir) if e["event"] == "train")
    summary = read_json(run_dir / "summary.json")
    return {
        "processes": procs,
        "steps": summary["steps"],
        "wall_s": round(wall, 2),
        "time_to_first_step_s": round(first_step - started, 2),
        "train_samples_per_s": summary["train_samples_per_s"],
        "eval_accuracy": summary.get("eval_accuracy"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    parser.add_argument("--full", action="store_true", help="the whole quickstart (all steps)")
    args = parser.parse_args()
    steps = None if args.full else args.steps
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(procs, steps, Path(tmp) / f"p{procs}") for procs in (2, 1)]
    ratio = rows[0]["train_samples_per_s"] / rows[1]["train_samples_per_s"]
    table = ["| processes | steps | wall s | time to first step s | samples/s | eval acc |",
             "|---|---|---|---|---|---|"]
    table += [f"| {r['processes']} | {r['steps']} | {r['wall_s']} | {r['time_to_first_step_s']} "
              f"| {r['train_samples_per_s']} | {r['eval_accuracy']} |" for r in rows]
    table.append(f"\nsamples/s, 2 processes vs 1: {ratio:.2f}x on {os.cpu_count()} CPU(s)")
    write_report("quickstart", {"runs": rows, "samples_per_s_ratio_2_vs_1": round(ratio, 3)},
                 table)


if __name__ == "__main__":
    main()
