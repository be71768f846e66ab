"""lr-find on the quickstart, then the full quickstart at the shipped lr and at the suggested one.

Reports lr-find's wall time (the acceptance: under 2 minutes on 2 cores) and both runs' SST-2 dev
accuracy, measured in this one script.
    .venv/bin/python bench/lr_find_bench.py
"""

from __future__ import annotations

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
    shipped = load_recipe(QUICKSTART).train.lr
    with tempfile.TemporaryDirectory() as tmp:
        folder = RunFolder(Path(tmp) / "lr-find")
        started = time.time()
        subprocess.run([sys.executable, "-m", "launcher", "lr-find", str(QUICKSTART),
                        "--backend", "local", "--run-dir", str(folder.path), "--quiet"],
                       cwd=REPO, check=True, capture_output=True)
        lr_find_s = time.time() - started
        found = LrFindResult.read(folder.lr_find)
        accuracy = {}
        for name, lr in (("shipped", shipped), ("suggested", found.suggested_lr)):
            run_dir = Path(tmp) / name
            launch(QUICKSTART, run_dir, f"train.lr={lr}")
            accuracy[name] = Summary.read(RunFolder(run_dir).summary).eval["accuracy"]
    table = ["| | train.lr | SST-2 dev accuracy |", "|---|---|---|",
             f"| shipped | {shipped:.3g} | {accuracy['shipped']:.4f} |",
             f"| lr-find's suggestion ({found.method}) | {found.suggested_lr:.3g} | "
             f"{accuracy['suggested']:.4f} |",
             f"\nlr-find: {len(found.lrs)} steps in {lr_find_s:.0f} s (wall, from the CLI)"]
    write_report("lr_find", {"lr_find_s": round(lr_find_s, 1), "steps": len(found.lrs),
                             "suggested_lr": found.suggested_lr, "method": found.method,
                             "shipped_lr": shipped, "accuracy": accuracy}, table)


if __name__ == "__main__":
    main()
