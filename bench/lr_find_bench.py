"""lr-find on the quickstart, then the full quickstart at the shipped lr and at the suggested one,
for each seed given (the two runs of a seed one after the other: this machine is noisy).

Reports lr-find's wall time (the acceptance: under 2 minutes on 2 cores) and every run's SST-2 dev
accuracy, measured in this one script.
    .venv/bin/python bench/lr_find_bench.py [--seeds 42,1,2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, launch, write_report

from launcher.contract.reports import LrFindResult, Summary
from launcher.contract.run_folder import RunFolder
from launcher.recipe.load import load_recipe

QUICKSTART = REPO / "recipes/quickstart.toml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="42", help="train.seed of the full runs, e.g. 42,1,2")
    seeds = [int(seed) for seed in parser.parse_args().seeds.split(",")]
    shipped = load_recipe(QUICKSTART).train.lr
    with tempfile.TemporaryDirectory() as tmp:
        folder = RunFolder(Path(tmp) / "lr-find")
        started = time.time()
        subprocess.run([sys.executable, "-m", "launcher", "lr-find", str(QUICKSTART),
                        "--backend", "local", "--run-dir", str(folder.path), "--quiet"],
                       cwd=REPO, check=True, capture_output=True)
        lr_find_s = time.time() - started
        found = LrFindResult.read(folder.lr_find)
        lrs = {"shipped": shipped, "suggested": found.suggested_lr}
        accuracy: dict[str, list[float]] = {name: [] for name in lrs}
        for seed in seeds:
            for name, lr in lrs.items():
                run_dir = Path(tmp) / f"{name}-{seed}"
                launch(QUICKSTART, run_dir, f"train.lr={lr}", f"train.seed={seed}")
                accuracy[name].append(Summary.read(RunFolder(run_dir).summary).eval["accuracy"])
    label = {"shipped": "shipped", "suggested": f"lr-find's suggestion ({found.method})"}
    table = ["| | train.lr | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
             "|---|---|" + "---|" * (len(seeds) + 1)]
    for name, lr in lrs.items():
        values = " | ".join(f"{a:.4f}" for a in accuracy[name])
        table.append(f"| {label[name]} | {lr:.3g} | {values} | "
                     f"{statistics.mean(accuracy[name]):.4f} |")
    table.append(f"\nSST-2 dev accuracy of the full quickstart. lr-find: {len(found.lrs)} steps "
                 f"in {lr_find_s:.0f} s (wall, from the CLI)")
    write_report("lr_find", {"lr_find_s": round(lr_find_s, 1), "steps": len(found.lrs),
                             "suggested_lr": found.suggested_lr, "method": found.method,
                             "shipped_lr": shipped, "seeds": seeds, "accuracy": accuracy}, table)


if __name__ == "__main__":
    main()
