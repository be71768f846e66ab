"""Shared by the benchmarks: run the real CLI, read a run folder (through the contract's
types), write a report."""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from launcher.contract.events import Event, TrainLogged, read_events
from launcher.contract.run_folder import RunFolder

REPO = Path(__file__).resolve().parents[1]
MIB = 2**20
RESULTS = REPO / "bench" / "results"


def launch(recipe: Path, run_dir: Path, *settings: str) -> None:
    """`sft-launch RECIPE --backend local` with `--set` pairs; raises with the log on failure."""
    args = [sys.executable, "-m", "launcher", str(recipe), "--backend", "local",
            "--run-dir", str(run_dir), "--quiet", "--set", "tracking.mode=disabled"]
    for setting in settings:
        args += ["--set", setting]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"run failed: {' '.join(args)}\n{result.stderr[-3000:]}")


def train_events(run_dir: Path) -> list[TrainLogged]:
    """The run's train events (one per optimizer step with log_every=1), in order."""
    found: list[Event] = list(read_events(RunFolder(run_dir).events))
    return [e for e in found if isinstance(e, TrainLogged)]


def step_seconds(run_dir: Path, skip: int = 2) -> float:
    """Median wall time of one optimizer step (log_every=1), the first `skip` left out."""
    times = [e.time for e in train_events(run_dir)]
    gaps = [b - a for a, b in itertools.pairwise(times)][skip:]
    return statistics.median(gaps)


def write_report(name: str, data: dict[str, Any], table: list[str]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


def tiny_llama(out: Path, hidden: int, layers: int) -> Path:
    """A random-init Llama (~30M parameters at hidden 512 x 8 layers) built offline."""
    if not (out / "config.json").exists():
        subprocess.run([sys.executable, "-m", "launcher", "make-tiny-model", str(out),
                        "--hidden", str(hidden), "--layers", str(layers), "--heads", "8"],
                       cwd=REPO, check=True, capture_output=True)
    return out
