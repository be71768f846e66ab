"""Step time and per-rank memory of every strategy on 2 CPU processes, ~30M-parameter Llama.

Same recipe, data and steps for each strategy, in one script; DDP is the peer for the ratios.
    .venv/bin/python bench/strategies_bench.py [--steps 10]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import REPO, launch, read_json, step_seconds, tiny_llama, write_report

STRATEGIES = {"ddp": [], "zero2": [], "fsdp": [], "zero3": [],
              "zero3_offload": ["distributed.offload_optimizer=true",
                                "distributed.offload_params=true"]}
MIB = 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_llama(Path(tmp) / "model", hidden=512, layers=8)
        for name, extra in STRATEGIES.items():
            run_dir = Path(tmp) / name
            strategy = "zero3" if name == "zero3_offload" else name
            launch(REPO / "recipes/alpaca-tiny-llama.toml", run_dir, f"model.path='{model}'",
                   f"distributed.strategy={strategy}", f"train.max_steps={args.steps}",
                   "train.log_every=1", "data.max_length=256", "train.global_batch_size=8",
                   *extra)
            rank0 = read_json(run_dir / "logs" / "rank-0.json")
            held = rank0["memory_bytes"]
            rows.append({
                "strategy": name,
                "parameters": read_json(run_dir / "plan.json")["memory"]["model_parameters"],
                "step_s": round(step_seconds(run_dir), 3),
                "local_params": rank0["local_param_numel"],
                "state_mib": round(sum(held.values()) / MIB, 1),
                "peak_rss_mib": round(rank0["peak_rss_bytes"] / MIB, 1),
                "eval_loss": read_json(run_dir / "summary.json")["eval_loss"],
            })
    ddp = rows[0]
    table = ["| strategy | step s | vs DDP | params/rank | params+grads+optim MiB/rank | "
             "peak RSS MiB/rank | eval loss |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['strategy']} | {r['step_s']} | {r['step_s'] / ddp['step_s']:.2f}x | "
                     f"{r['local_params']:,} | {r['state_mib']} | {r['peak_rss_mib']} | "
                     f"{r['eval_loss']:.4f} |")
    table.append(f"\n{ddp['parameters']:,}-parameter Llama, 2 CPU processes (gloo), fp32, "
                 f"global batch 8 x 256 tokens, {args.steps} steps")
    write_report("strategies", {"runs": rows}, table)


if __name__ == "__main__":
    main()
