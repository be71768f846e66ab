"""Packed vs padded batches on the alpaca demo data with a ~30M-parameter Llama.

Token efficiency (real tokens / tokens computed) and real tokens/s, both runs in this script;
the ratio packed/padded is the headline.
    .venv/bin/python bench/packing_bench.py [--steps 12]
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from common import REPO, launch, step_seconds, tiny_llama, write_report

from launcher.contract.reports import Summary
from launcher.contract.run_folder import RunFolder


@dataclass(frozen=True)
class Run:
    batches: str
    token_efficiency: float
    step_s: float
    real_tokens_per_s: float
    eval_loss: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    rows: dict[bool, Run] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_llama(Path(tmp) / "model", hidden=512, layers=8)
        for packing in (False, True):
            run_dir = Path(tmp) / f"packing-{packing}"
            launch(REPO / "recipes/alpaca-tiny-llama.toml", run_dir, f"model.path='{model}'",
                   f"task.packing={str(packing).lower()}", f"train.max_steps={args.steps}",
                   "train.log_every=1", "data.max_length=512", "train.global_batch_size=8",
                   "distributed.strategy=ddp")
            summary = Summary.read(RunFolder(run_dir).summary)
            step = step_seconds(run_dir)
            real_tokens_per_step = summary.tokens / summary.steps
            rows[packing] = Run(batches="packed" if packing else "padded",
                                token_efficiency=summary.token_efficiency, step_s=round(step, 3),
                                real_tokens_per_s=round(real_tokens_per_step / step, 1),
                                eval_loss=summary.eval["loss"])
    ratio = rows[True].real_tokens_per_s / rows[False].real_tokens_per_s
    table = ["| batches | token efficiency | step s | real tokens/s | eval loss |",
             "|---|---|---|---|---|"]
    table += [f"| {r.batches} | {r.token_efficiency:.3f} | {r.step_s} | {r.real_tokens_per_s} "
              f"| {r.eval_loss:.4f} |" for r in rows.values()]
    table.append(f"\nreal tokens/s, packed vs padded: {ratio:.2f}x (2 CPU processes, max length "
                 f"512, global batch 8, {args.steps} steps)")
    write_report("packing", {"runs": [asdict(r) for r in rows.values()],
                             "tokens_per_s_ratio": round(ratio, 3)}, table)


if __name__ == "__main__":
    main()
