"""`python -m launcher.worker RUN_DIR [--resume]`: the training worker, started on every rank."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from launcher.worker.allocator import return_freed_blocks
from launcher.worker.exiting import exit_now
from launcher.worker.stopping import REQUEST


def main(argv: list[str] | None = None) -> int:
    REQUEST.install()  # first: a stop signal during the heavy imports must not be lost
    from launcher.contract.errors import LaunchError
    from launcher.contract.plan import Plan
    from launcher.contract.run_folder import RunFolder
    from launcher.contract.vocabulary import WORKER_ERROR, ExitCode
    from launcher.recipe.load import load_recipe

    parser = argparse.ArgumentParser(prog="python -m launcher.worker",
                                     description="Train the run described by RUN_DIR/plan.json.")
    parser.add_argument("run_dir", type=Path, help="the run folder written by sft-launch")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest complete checkpoint")
    args = parser.parse_args(argv)
    folder = RunFolder(args.run_dir.resolve())
    try:
        plan = Plan.read(folder.plan)
        if plan.active_strategy and plan.active_strategy.shards_parameters:
            return_freed_blocks()  # before torch allocates anything
        recipe = load_recipe(folder.recipe)
        from launcher.worker.run import run

        return run(folder, recipe, plan, resume=args.resume)
    except LaunchError as err:
        print(f"{WORKER_ERROR}{err}", file=sys.stderr, flush=True)
        return ExitCode.REFUSED


if __name__ == "__main__":
    exit_now(main())
