"""Background (async) checkpoints against foreground ones: the training stall per checkpoint.

The same run (a random-init Llama of ~30M parameters, 2 DDP processes, a checkpoint every
`--every` steps) with `train.async_checkpoints` off and on, interleaved over rounds. The stall
of the checkpoint taken after step k is the time of steps k+1 .. k+W above W median step times
(the median over steps with no checkpoint in the W before them): in the foreground the whole
write lands in step k+1; in the background the copy to host memory does, and the write's
competition for the CPU and the completion (manifest, rename) in the steps after.
Acceptance (issue 31): the background stall is at most 20% of the foreground one.
    .venv/bin/python bench/async_checkpoint_bench.py [--rounds 3] [--steps 26] [--every 5]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
from pathlib import Path

from common import REPO, launch, tiny_llama, train_events, write_report

WINDOW = 3  # steps after a checkpoint that may pay for it


def stalls(run_dir: Path, every: int, steps: int) -> tuple[list[float], float]:
    """Each checkpoint's stall (s) and the median step time without one nearby."""
    times = [e.time for e in train_events(run_dir)]
    gaps = dict(enumerate((b - a for a, b in itertools.pairwise(times)), start=2))  # step: s
    near = {k + i for k in range(every, steps, every) for i in range(1, WINDOW + 1)}
    quiet = statistics.median(s for step, s in gaps.items() if step not in near and step > 3)
    return [sum(gaps[k + i] - quiet for i in range(1, WINDOW + 1) if k + i in gaps)
            for k in range(every, steps - WINDOW, every)], quiet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=26)
    parser.add_argument("--every", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {"sync": [], "async": []}
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_llama(Path(tmp) / "model", hidden=512, layers=8)
        for round_, mode in itertools.product(range(args.rounds), ("sync", "async")):
            run_dir = Path(tmp) / f"{mode}-{round_}"
            launch(REPO / "recipes/alpaca-tiny-llama.toml", run_dir, f"model.path='{model}'",
                   "distributed.procs_per_node=2", "distributed.strategy=ddp",
                   "data.max_train_samples=2000", "data.max_length=128",
                   f"train.max_steps={args.steps}", "train.global_batch_size=8",
                   "train.log_every=1", f"train.save_every={args.every}",
                   "train.keep_checkpoints=2", "train.generation_prompts=0",
                   f"train.async_checkpoints={'true' if mode == 'async' else 'false'}")
            each, quiet = stalls(run_dir, args.every, args.steps)
            results[mode].append({"round": round_, "stalls_s": [round(s, 3) for s in each],
                                  "median_step_s": round(quiet, 3)})
            print(mode, round_, [round(s, 2) for s in each], f"step {quiet:.2f} s", flush=True)
    median = {mode: statistics.median(s for r in runs for s in r["stalls_s"])
              for mode, runs in results.items()}
    ratio = median["async"] / median["sync"] if median["sync"] > 0 else float("nan")
    table = ["| mode | stall per checkpoint (median, s) | median step (s) |", "|---|---|---|"]
    table += [f"| {mode} | {median[mode]:.3f} | "
              f"{statistics.median(r['median_step_s'] for r in runs):.3f} |"
              for mode, runs in results.items()]
    table.append(f"\nbackground / foreground stall: {ratio:.2f} (acceptance: <= 0.20)")
    write_report("async_checkpoint", {"rounds": results, "median_stall_s": median,
                                      "ratio": ratio}, table)


if __name__ == "__main__":
    main()
