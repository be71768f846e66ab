"""Benchmark the quickstart: samples/s and time to first step, 2 processes vs a 1-process peer.

Runs the real CLI (local backend) twice in this script, same recipe and step count, and reports
absolute figures and the 2-vs-1 ratio. Writes bench/results/quickstart.{json,md}.

    .venv/bin/python bench/quickstart_bench.py [--steps 40] [--full]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def run(procs: int, steps: int | None, run_dir: Path) -> dict[str, float]:
    """One quickstart run; figures from the CLI's clock and the run's own event log."""
    args = [sys.executable, "-m", "launcher", str(REPO / "recipes/quickstart.toml"),
            "--backend", "local", "--run-dir", str(run_dir), "--quiet",
            "--procs-per-node", str(procs), "--set", "train.log_every=1",
            "--set", "tracking.mode=disabled"]
    if steps:
        args += ["--set", f"train.max_steps={steps}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    started = time.time()
    subprocess.run(args, cwd=REPO, env=env, check=True, capture_output=True)
    wall = time.time() - started
    events = [json.loads(line) for line in (run_dir / "logs/events.jsonl").read_text().splitlines()]
    first_step = next(e["time"] for e in events if e["event"] == "train")
    summary = json.loads((run_dir / "summary.json").read_text())
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
    two, one = rows
    ratio = two["train_samples_per_s"] / one["train_samples_per_s"]
    report = {"runs": rows, "samples_per_s_ratio_2_vs_1": round(ratio, 3), "cpus": os.cpu_count()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quickstart.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["| processes | steps | wall s | time to first step s | samples/s | eval acc |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['processes']} | {r['steps']} | {r['wall_s']} | {r['time_to_first_step_s']} "
              f"| {r['train_samples_per_s']} | {r['eval_accuracy']} |" for r in rows]
    lines.append(f"\nsamples/s, 2 processes vs 1: {ratio:.2f}x on {os.cpu_count()} CPU(s)")
    (RESULTS / "quickstart.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
