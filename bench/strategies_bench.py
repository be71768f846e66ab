"""Step time and per-rank memory of every strategy on 2 CPU processes, ~30M-parameter Llama.

Same recipe, data and steps for each of the planner's layouts (launcher.planner.memory.CANDIDATES:
ddp, zero2, fsdp, zero3, zero3+offload), in one script; DDP is the peer for the ratios.
    .venv/bin/python bench/strategies_bench.py [--steps 10]
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from common import MIB, REPO, launch, step_seconds, tiny_llama, write_report

from launcher.contract.plan import Plan
from launcher.contract.reports import RankReport, Summary
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import Strategy
from launcher.planner.memory import CANDIDATES


@dataclass(frozen=True)
class Run:
    strategy: str
    parameters: int
    step_s: float
    local_params: int
    state_mib: float
    peak_rss_mib: float
    eval_loss: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_llama(Path(tmp) / "model", hidden=512, layers=8)
        for index, (strategy, offload) in enumerate(CANDIDATES):
            folder = RunFolder(Path(tmp) / f"layout-{index}")
            offloaded = [f"distributed.offload_{what.value}=true" for what in offload]
            launch(REPO / "recipes/alpaca-tiny-llama.toml", folder.path, f"model.path='{model}'",
                   f"distributed.strategy={strategy.value}", f"train.max_steps={args.steps}",
                   "train.log_every=1", "data.max_length=256", "train.global_batch_size=8",
                   *offloaded)
            memory = Plan.read(folder.plan).memory
            rank0 = RankReport.read(folder.rank_report(0))
            if memory is None or rank0.held_bytes is None or rank0.peak_rss_bytes is None:
                raise RuntimeError(f"{folder.path}: no memory plan or no held/peak bytes")
            rows.append(Run(
                strategy=memory.estimate_for(strategy, offload).label,
                parameters=memory.model_parameters,
                step_s=round(step_seconds(folder.path), 3),
                local_params=rank0.local_param_numel,
                state_mib=round(rank0.held_bytes.total / MIB, 1),
                peak_rss_mib=round(rank0.peak_rss_bytes / MIB, 1),
                eval_loss=Summary.read(folder.summary).eval["loss"],
            ))
    ddp = rows[CANDIDATES.index((Strategy.DDP, ()))]  # the peer
    table = ["| strategy | step s | vs DDP | params/rank | params+grads+optim MiB/rank | "
             "peak RSS MiB/rank | eval loss |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r.strategy} | {r.step_s} | {r.step_s / ddp.step_s:.2f}x | "
                     f"{r.local_params:,} | {r.state_mib} | {r.peak_rss_mib} | "
                     f"{r.eval_loss:.4f} |")
    table.append(f"\n{ddp.parameters:,}-parameter Llama, 2 CPU processes (gloo), fp32, "
                 f"global batch 8 x 256 tokens, {args.steps} steps")
    write_report("strategies", {"runs": [asdict(r) for r in rows]}, table)


if __name__ == "__main__":
    main()
