"""sft-launch against TRL's SFTTrainer (packed, bfd, padding-free): same model, tokenizer and
conversations, interleaved rounds in one script, paired ratios.

Setup (issue 10): a random-init Llama (hidden 512, 8 layers, 8 heads, 8 KV heads, intermediate
1408, untied embeddings, max position 512; ~34M parameters) with a byte-level BPE of vocab 8,192
trained on the alpaca demo rows and the chat template `<|role|>\\n{content}<eos>\\n`; the 999
alpaca demo rows as user/assistant conversations, loss on the responses; max length 512; fp32,
SDPA. Per round and global batch: TRL, then sft-launch through its CLI (`task.packing`). MFU =
6 x parameters x real tokens/s / the fp32 matmul peak this script measures (2048^3). Needs the
optional `bench` extra (pip install -e '.[bench]').
    .venv/bin/python bench/peer_bench.py [--rounds 3 --steps 20 --batches 3,8 --procs 1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common import MIB, REPO, launch, train_events, write_report

from launcher.contract.reports import RankReport
from launcher.contract.run_folder import RunFolder

ALPACA = REPO / "recipes" / "data" / "alpaca" / "alpaca_en_demo.json"
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n"
            "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
SKIP = 2  # steady state: the first steps are left out


@dataclass(frozen=True)
class Run:
    tool: str
    batch: int
    round: int
    tokens_per_step: float  # real tokens, mean over the steady steps
    tokens_per_s: float  # real tokens, median over the steady steps
    mfu: float
    peak_rss_mib: float  # the high-water mark through training (TRL saves no model here)
    time_to_first_step_s: float  # from the process start


def conversations(rows: list[dict]) -> list[tuple[str, str]]:
    """(user, assistant) per alpaca row: the instruction, then the input after a blank line."""
    return [(row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else ""),
             row["output"]) for row in rows]


SHAPE = {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 8,
         "num_attention_heads": 8, "num_key_value_heads": 8}  # the 34.09M Llama


def build_model(root: Path, shape: dict[str, int], max_length: int) -> tuple[Path, Path, int]:
    """A random-init Llama of `shape` (untied embeddings) with a BPE of 8,192 trained on the
    alpaca rows, and the rows as conversations: the model folder, sft-launch's messages file,
    the parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from launcher.tasks.tiny_model import build_tokenizer

    pairs = conversations(json.loads(ALPACA.read_text()))
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(f"{user}\n{answer}" for user, answer in pairs))
    model_dir = root / "model"
    tokenizer = build_tokenizer([corpus], model_dir, vocab_size=8192)
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(str(model_dir))
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=max_length,
                         tie_word_embeddings=False, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **shape)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(model_dir))
    messages = root / "messages.jsonl"
    messages.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": user}, {"role": "assistant", "content": answer}]}) + "\n"
        for user, answer in pairs))
    return model_dir, messages, sum(p.numel() for p in model.parameters())


def build_setup(root: Path) -> tuple[Path, Path, Path, int]:
    """The model folder, sft-launch's messages file, TRL's data folder, the parameter count."""
    model_dir, messages, params = build_model(root, SHAPE, max_length=512)
    pairs = conversations(json.loads(ALPACA.read_text()))
    trl_data = root / "trl"
    trl_data.mkdir()
    (trl_data / "train.jsonl").write_text("".join(json.dumps({
        "prompt": [{"role": "user", "content": user}],
        "completion": [{"role": "assistant", "content": answer}]}) + "\n"
        for user, answer in pairs))
    return model_dir, messages, trl_data, params


def matmul_peak(threads: int) -> float:
    """FLOP/s of the best of 5 fp32 2048^3 matmuls on `threads` threads."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(5))
    return 2 * 2048**3 / best


def _timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def run_trl(model: Path, data: Path, batch: int, steps: int, threads: int) -> dict:
    out = subprocess.run([sys.executable, str(REPO / "bench" / "peer_trl.py"), str(model),
                          str(data / "train.jsonl"), "--batch", str(batch), "--steps", str(steps),
                          "--threads", str(threads)],
                         capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"TRL run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def trl_figures(found: dict, batch: int, rnd: int, params: int, peak: float) -> Run:
    ends, tokens = found["step_ends"], found["tokens"]
    rates = [tokens[i] / (ends[i] - ends[i - 1]) for i in range(SKIP, len(ends))]
    return _run("trl", batch, rnd, tokens[SKIP:], rates, params, peak, found["high_water"],
                ends[0] - found["started"])


def run_sft_launch(root: Path, model: Path, messages: Path, batch: int, steps: int, procs: int,
                   rnd: int, params: int, peak: float) -> Run:
    run_dir = root / f"sft-{batch}-{rnd}"
    started = time.time()
    launch(REPO / "recipes" / "alpaca-tiny-llama.toml", run_dir, f"model.path='{model}'",
           f"data.train='{messages}'", "data.format=messages", "data.eval_fraction=0",
           "data.max_length=512", "task.packing=true", "task.train_on=assistant",
           f"train.global_batch_size={batch}", f"train.max_steps={steps}", "train.lr=1e-3",
           "train.schedule=constant", "train.warmup_ratio=0", "train.log_every=1",
           "train.generation_prompts=0", f"distributed.procs_per_node={procs}")
    logged = train_events(run_dir)
    rates = [e.tokens_per_s for e in logged[SKIP:] if e.tokens_per_s]
    gaps = [b.time - a.time for a, b in zip(logged[SKIP - 1:], logged[SKIP:], strict=False)]
    folder = RunFolder(run_dir)
    reports = [RankReport.read(folder.rank_report(r)) for r in range(procs)]
    return _run("sft-launch", batch, rnd, [r * g for r, g in zip(rates, gaps, strict=False)],
                rates, params, peak,
                max(r.trained_rss_bytes or r.peak_rss_bytes or 0 for r in reports),
                logged[0].time - started)


def _run(tool: str, batch: int, rnd: int, tokens: list[float], rates: list[float], params: int,
         peak: float, rss: int, first: float) -> Run:
    rate = statistics.median(rates)
    return Run(tool=tool, batch=batch, round=rnd, tokens_per_step=round(statistics.mean(tokens)),
               tokens_per_s=round(rate, 1), mfu=round(6 * params * rate / peak, 3),
               peak_rss_mib=round(rss / MIB, 1), time_to_first_step_s=round(first, 2))


def trl_cli_first_step(model: Path, data: Path, threads: int) -> float:
    """Seconds from starting `trl sft` to its first logged loss (same model, data, packing)."""
    args = ["trl", "sft", "--model_name_or_path", str(model), "--dataset_name", str(data),
            "--packing", "--padding_free", "--max_length", "512", "--max_steps", "2",
            "--per_device_train_batch_size", "3", "--logging_steps", "1", "--report_to", "none",
            "--save_strategy", "no", "--use_cpu", "--output_dir", str(data.parent / "trl-cli")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": str(threads)}
    started = time.time()
    with subprocess.Popen([str(Path(sys.executable).parent / args[0]), *args[1:]],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          start_new_session=True) as process:
        try:
            for line in process.stdout or ():
                if "'loss'" in line:
                    return round(time.time() - started, 2)
        finally:  # the CLI starts its trainer in a child process (accelerate launch)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError("`trl sft` logged no loss")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batches", default="3,8")
    parser.add_argument("--procs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, messages, trl_data, params = build_setup(root)
        peak = matmul_peak(args.threads)
        cli_first = trl_cli_first_step(model, trl_data, args.threads)
        for rnd in range(args.rounds):
            for batch in batches:
                found = run_trl(model, trl_data, batch, args.steps, args.threads)
                runs.append(trl_figures(found, batch, rnd, params, peak))
                runs.append(run_sft_launch(root, model, messages, batch, args.steps, args.procs,
                                           rnd, params, peak))
                print(runs[-2], runs[-1], sep="\n", flush=True)
    write_report("peer", {"parameters": params, "matmul_peak_flops": peak,
                          "trl_cli_first_step_s": cli_first, "runs": [asdict(r) for r in runs]},
                 table(runs, batches, params, peak, cli_first, args))


def table(runs: list[Run], batches: list[int], params: int, peak: float, cli_first: float,
          args: argparse.Namespace) -> list[str]:
    lines = ["| global batch | tool | real tokens/step | real tokens/s (rounds) | MFU | "
             "peak RSS MiB | first step s | paired ratio sft-launch/TRL |",
             "|---|---|---|---|---|---|---|---|"]
    for batch in batches:
        pair = {tool: [r for r in runs if r.batch == batch and r.tool == tool]
                for tool in ("trl", "sft-launch")}
        ratios = [s.tokens_per_s / t.tokens_per_s
                  for s, t in zip(pair["sft-launch"], pair["trl"], strict=True)]
        for tool, found in pair.items():
            rates = ", ".join(f"{r.tokens_per_s:.0f}" for r in found)
            lines.append(
                f"| {batch} | {tool} | {statistics.mean(r.tokens_per_step for r in found):.0f} | "
                f"{rates} | {statistics.median(r.mfu for r in found):.0%} | "
                f"{max(r.peak_rss_mib for r in found):,.0f} | "
                f"{statistics.median(r.time_to_first_step_s for r in found):.1f} | "
                + (f"{', '.join(f'{x:.2f}' for x in ratios)} (median "
                   f"{statistics.median(ratios):.2f}x)" if tool == "sft-launch" else "") + " |")
    lines.append(f"\n{params:,}-parameter Llama, {args.procs} process(es) x {args.threads} "
                 f"threads, {args.steps} steps per run, {args.rounds} interleaved rounds; matmul "
                 f"peak {peak / 1e9:.0f} GFLOP/s; `trl sft` CLI: first step after {cli_first} s")
    return lines


if __name__ == "__main__":
    main()
