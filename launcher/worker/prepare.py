"""`python -m launcher.worker.prepare RUN_DIR`: tokenize (or extract the features of) a run's data
into the shared cache, in one process and before any training process starts: a Slurm run's data
preparation job (prepare.sbatch, which its training job depends on), and `sft-launch prepare`.
A complete entry is left as it is."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from launcher.contract.errors import LaunchError
from launcher.contract.events import EventLog
from launcher.contract.plan import Plan
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import WORKER_ERROR, ExitCode
from launcher.data.cache_entry import cache_entry, is_complete
from launcher.recipe.load import load_recipe
from launcher.tasks.base import build_task
from launcher.worker.preprocess import encode_or_load


def prepare(folder: RunFolder) -> Path:
    """The run's cache entry, written unless complete; returns its folder."""
    plan, recipe = Plan.read(folder.plan), load_recipe(folder.recipe)
    entry = cache_entry(recipe, plan)
    events = EventLog(folder.events, True)
    if is_complete(entry):
        events.message(f"preprocessing: the cache entry {entry} is complete already")
        print(f"sft-launch: cache hit: {entry} is complete already, nothing to prepare")
        return entry
    task = build_task(recipe, plan)
    task.tokenizer = tokenizer = task.load_tokenizer()
    encode_or_load(task, tokenizer, entry, events, lambda: None,
                   save=True)
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher.worker.prepare",
                                     description="Preprocess the data of the run in RUN_DIR "
                                     "into the shared cache.")
    parser.add_argument("run_dir", type=Path, help="the run folder written by sft-launch")
    folder = RunFolder(parser.parse_args(argv).run_dir.resolve())
    try:
        prepare(folder)
    except (LaunchError, ValueError) as err:
        print(f"{WORKER_ERROR}{err}", file=sys.stderr, flush=True)
        return ExitCode.USAGE
    except OSError as err:  # the cache cannot be written: not shared, full, read-only
        print(f"{WORKER_ERROR}cannot write the cache entry: {err} (the cache is "
              "$SFT_LAUNCH_CACHE, else ~/.cache/sft-launch)", file=sys.stderr, flush=True)
        return ExitCode.FAILED
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
