"""Per-rank peak host memory of ddp, fsdp and zero3 on a ~300M-parameter Llama, 2 CPU processes,
against the plan's `peak_bytes` for the same layout.

Same recipe, data and steps for each strategy, in one script; DDP is the peer for the ratios
(the point of sharding: fsdp and zero3 below 0.7x DDP's peak).
    .venv/bin/python bench/memory_bench.py [--hidden 1024 --layers 18 --steps 2]
With `--task image|audio|speech`: the example recipe of that task with its real model (`make
models`: EfficientNet-Lite0 at 224 pixels, Whisper tiny.en), whose plan measures the model on
the fake device (launcher.worker.probe) instead of counting it from its config.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from common import MIB, REPO, launch, tiny_llama, write_report

from launcher.contract.plan import Plan
from launcher.contract.reports import RankReport
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import Strategy

STRATEGIES = (Strategy.DDP, Strategy.FSDP, Strategy.ZERO3)
TASK_RECIPES = {"image": "image-ants-bees.toml", "audio": "speech-digits.toml",
                "speech": "asr-digits.toml"}


@dataclass(frozen=True)
class Run:
    strategy: str
    parameters: int
    plan_peak_mib: float | None
    loaded_rss_mib: tuple[float, ...]  # per rank, once the model is loaded and sharded
    trained_rss_mib: tuple[float, ...]  # per rank, after training, before the final save
    peak_rss_mib: tuple[float, ...]  # per rank, the whole run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=18)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--task", choices=("llama", *TASK_RECIPES), default="llama",
                        help="the Llama above, or an example recipe of that task")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.task == "llama":
            model = tiny_llama(Path(tmp) / "model", hidden=args.hidden, layers=args.layers)
            recipe = REPO / "recipes/alpaca-tiny-llama.toml"
            settings = (f"model.path='{model}'", "train.global_batch_size=4",
                        "data.max_length=128", "train.generation_prompts=0", "data.eval_fraction=0")
        else:
            recipe, settings = REPO / "recipes" / TASK_RECIPES[args.task], ()
        for strategy in STRATEGIES:
            folder = RunFolder(Path(tmp) / strategy.value)
            launch(recipe, folder.path, *settings, f"distributed.strategy={strategy.value}",
                   f"train.max_steps={args.steps}")
            plan = Plan.read(folder.plan)
            memory = plan.memory
            estimate = memory.estimate_for(strategy, ()) if memory is not None else None
            reports = [RankReport.read(folder.rank_report(r)) for r in range(plan.world_size)]
            rows.append(Run(
                strategy=strategy.value,
                parameters=memory.model_parameters if memory is not None else 0,
                plan_peak_mib=(round(estimate.peak_bytes / MIB, 1)
                               if estimate is not None and estimate.peak_bytes else None),
                loaded_rss_mib=tuple(round((r.loaded_rss_bytes or 0) / MIB, 1) for r in reports),
                trained_rss_mib=tuple(round((r.trained_rss_bytes or 0) / MIB, 1)
                                      for r in reports),
                peak_rss_mib=tuple(round((r.peak_rss_bytes or 0) / MIB, 1) for r in reports),
            ))
    ddp = max(rows[0].peak_rss_mib)
    table = ["| strategy | plan peak MiB | RSS MiB/rank: loaded | trained | peak | "
             "measured / plan | peak vs DDP |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        peak = max(r.peak_rss_mib)
        ratio = f"{peak / r.plan_peak_mib:.2f}" if r.plan_peak_mib else "-"
        table.append(f"| {r.strategy} | {r.plan_peak_mib or '-'} | "
                     f"{' / '.join(map(str, r.loaded_rss_mib))} | "
                     f"{' / '.join(map(str, r.trained_rss_mib))} | "
                     f"{' / '.join(map(str, r.peak_rss_mib))} | {ratio} | {peak / ddp:.2f}x |")
    if args.task == "llama":
        table.append(f"\n{rows[0].parameters:,}-parameter Llama (hidden {args.hidden}, "
                     f"{args.layers} layers), 2 CPU processes (gloo), fp32, {args.steps} steps "
                     "of 4 x 128 tokens")
    else:
        table.append(f"\nrecipes/{TASK_RECIPES[args.task]} ({rows[0].parameters:,} parameters), "
                     f"2 CPU processes (gloo), {args.steps} steps")
    name = "memory" if args.task == "llama" else f"memory-{args.task}"
    write_report(name, {"runs": [asdict(r) for r in rows]}, table)


if __name__ == "__main__":
    main()
