"""sft-launch's image_classification against transformers' Trainer: paired, interleaved rounds."""

# Same model (models/efficientnet-lite0), processor, images (recipes/image-ants-bees.toml's
# training folder, all of it: no held-out share, no eval), global batch, lr, seed, fp32 on CPU,
# process count, threads per process and DataLoader workers per process; no augmentation on
# either side. Each round runs both tools, the order alternating, each in fresh data caches.
# Measured per run: images/s over the steps after the first, the peak RSS once trained (max over
# ranks; DataLoader workers not counted, on either side), the time from starting the tool's
# process to the end of its first optimizer step, and rank 0's share of step time spent waiting
# for data. The Trainer side is bench/image_peer_trainer.py.
#     .venv/bin/python bench/image_peer_bench.py [--rounds 3 --steps 30 --procs 1] [--smoke]

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common import MIB, REPO, launch, train_events, write_report

from launcher.contract.events import TrainLogged
from launcher.contract.reports import RankReport, Summary
from launcher.contract.run_folder import RunFolder
from launcher.recipe.load import load_recipe
from launcher.recipe.schema import Recipe

RECIPE = REPO / "recipes" / "image-ants-bees.toml"
TRAINER = REPO / "bench" / "image_peer_trainer.py"
TOOLS = ("trainer", "sft-launch")
LOWER_IS_BETTER = ("peak_rss_mib", "time_to_first_step_s", "data_wait_share")
FIELDS = ("images_per_s", "peak_rss_mib", "time_to_first_step_s", "data_wait_share")
HEADER = ["| round | tool | images/s | peak RSS MiB | first step s | data wait share |",
          "|---|---|---|---|---|---|"]


@dataclass(frozen=True)
class Run:
    tool: str
    round: int
    images_per_s: float  # all ranks, over steps 2..S (end of step 1 to end of step S)
    peak_rss_mib: float  # max over ranks of the training process's high-water mark, trained
    time_to_first_step_s: float  # from starting the tool's process to the end of step 1
    data_wait_share: float | None  # rank 0: time waiting for data / step time, steps 2..S
    steps: int
    images: int  # trained on in steps 2..S, all ranks
    train_rows: int  # the training set as the tool loaded it


@dataclass(frozen=True)
class Setup:
    model: Path
    images: Path
    recipe: Recipe
    batch: int
    steps: int
    procs: int
    workers: int

    @property
    def threads(self) -> int:  # sft-launch's plan: the machine's CPUs shared by the processes
        return max(1, (os.cpu_count() or 1) // self.procs)

    @property
    def warmup_steps(self) -> int:  # sft-launch's make_scheduler: round(warmup_ratio x steps)
        return round(self.recipe.train.warmup_ratio * self.steps)


def bench_recipe(setup: Setup, root: Path) -> Path:
    """image-ants-bees.toml's model, data and training settings, without [data.augment] or the
    held-out share (the Trainer side trains on every image and evaluates nothing)."""
    train = setup.recipe.train
    path = root / "image-peer.toml"
    path.write_text("\n".join([
        "[model]", f"path = {json.dumps(str(setup.model))}",
        "[task]", 'kind = "image_classification"',
        "[data]", f"train = {json.dumps(str(setup.images))}", "eval_fraction = 0.0",
        f"loader_workers = {setup.workers}",
        "[train]", f"global_batch_size = {setup.batch}", f"lr = {train.lr}",
        f"warmup_ratio = {train.warmup_ratio}", f"weight_decay = {train.weight_decay}",
        f"seed = {train.seed}", "log_every = 1",
        "[distributed]", 'strategy = "ddp"',
        "[tracking]", 'mode = "disabled"', ""]))
    return path


def run_trainer(setup: Setup, root: Path, rnd: int) -> Run:
    out = root / f"trainer-{rnd}"
    script = [str(TRAINER), str(setup.model), str(setup.images), str(out),
              "--batch", str(setup.batch), "--steps", str(setup.steps),
              "--lr", str(setup.recipe.train.lr), "--warmup-steps", str(setup.warmup_steps),
              "--weight-decay", str(setup.recipe.train.weight_decay),
              "--seed", str(setup.recipe.train.seed), "--workers", str(setup.workers),
              "--threads", str(setup.threads)]
    launcher = ([sys.executable] if setup.procs == 1 else
                [sys.executable, "-m", "torch.distributed.run", "--standalone",
                 "--nproc_per_node", str(setup.procs)])
    started = time.time()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(root / f"hf-cache-{rnd}"), "BENCH_STARTED": repr(started)}
    result = subprocess.run([*launcher, *script], cwd=REPO, env=env, capture_output=True,
                            text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"Trainer run failed:\n{result.stderr[-3000:]}")
    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in range(setup.procs)]
    main = ranks[0]
    ends = main["step_ends"]
    images = sum(sum(rank["images"][1:]) for rank in ranks)
    return Run(tool="trainer", round=rnd, images_per_s=round(images / (ends[-1] - ends[0]), 2),
               peak_rss_mib=round(max(r["rss_after_training"] for r in ranks) / MIB, 1),
               time_to_first_step_s=round(main["first_step_s"], 2),
               data_wait_share=round(sum(main["waits"][1:]) / (ends[-1] - ends[0]), 4),
               steps=len(ends), images=images, train_rows=main["dataset_rows"])


def run_sft_launch(setup: Setup, recipe: Path, root: Path, rnd: int) -> Run:
    run_dir = root / f"sft-{rnd}"
    os.environ["SFT_LAUNCH_CACHE"] = str(root / f"sft-cache-{rnd}")  # launch() passes it on
    started = time.time()
    launch(recipe, run_dir, f"train.max_steps={setup.steps}",
           f"distributed.procs_per_node={setup.procs}")
    logged = train_events(run_dir)  # one per step (log_every = 1), written by rank 0
    folder = RunFolder(run_dir)
    summary = Summary.read(folder.summary)
    reports = [RankReport.read(path) for path in folder.rank_reports()]
    if len(reports) != setup.procs:
        raise RuntimeError(f"sft-launch ran {len(reports)} ranks, not {setup.procs}")
    ends = [e.time for e in logged]
    images = setup.batch * (len(ends) - 1)
    return Run(tool="sft-launch", round=rnd,
               images_per_s=round(images / (ends[-1] - ends[0]), 2),
               peak_rss_mib=round(max(r.trained_rss_bytes or r.peak_rss_bytes or 0
                                      for r in reports) / MIB, 1),
               time_to_first_step_s=round(ends[0] - started, 2),
               data_wait_share=wait_share(logged), steps=len(ends), images=images,
               train_rows=summary.data.train_rows)


def wait_share(logged: list[TrainLogged]) -> float | None:
    """sft-launch's train/data_wait_share over steps 2..S, from the events where they carry it
    (weighted by step time); None where they do not (it goes to the tracker only)."""
    pairs = [(getattr(b, "data_wait_share", None), b.time - a.time)
             for a, b in itertools.pairwise(logged)]
    if not pairs or any(share is None for share, _ in pairs):
        return None
    return round(sum(share * gap for share, gap in pairs) / sum(gap for _, gap in pairs), 4)


def ratios(runs: list[Run], field: str) -> list[float]:
    """Per round: sft-launch / Trainer where higher is better, Trainer / sft-launch where lower."""
    out = []
    for rnd in sorted({r.round for r in runs}):
        pair = {r.tool: getattr(r, field) for r in runs if r.round == rnd}
        top, bottom = ((pair["trainer"], pair["sft-launch"]) if field in LOWER_IS_BETTER
                       else (pair["sft-launch"], pair["trainer"]))
        if top is not None and bottom:
            out.append(round(top / bottom, 3))
    return out


def rows(runs: list[Run]) -> list[str]:
    return [f"| {r.round} | {r.tool} | {r.images_per_s:.2f} | {r.peak_rss_mib:,.0f} | "
            f"{r.time_to_first_step_s:.1f} | "
            + (f"{r.data_wait_share:.1%}" if r.data_wait_share is not None else "n/a") + " |"
            for r in runs]


def table(runs: list[Run], setup: Setup) -> tuple[list[str], dict[str, float | None]]:
    medians = {f: (statistics.median(found) if (found := ratios(runs, f)) else None)
               for f in FIELDS}
    lines = [*HEADER, *rows(runs), "", "| measure | median ratio | per round |", "|---|---|---|"]
    for field in FIELDS:
        how = ("Trainer / sft-launch" if field in LOWER_IS_BETTER else "sft-launch / Trainer")
        median = medians[field]
        lines.append(f"| {field} ({how}) | "
                     + (f"{median:.2f}x" if median is not None else "n/a") + " | "
                     + ", ".join(f"{x:.2f}" for x in ratios(runs, field)) + " |")
    lines.append(f"\nEfficientNet-Lite0, {runs[0].train_rows} images, global batch {setup.batch}, "
                 f"{setup.steps} steps, {setup.procs} process(es) x {setup.threads} thread(s), "
                 f"{setup.workers} loader workers per process, {len(runs) // 2} round(s); "
                 "ratios > 1: sft-launch better")
    return lines, medians


def make_setup(args: argparse.Namespace) -> Setup:
    recipe = load_recipe(RECIPE)
    model = Path(recipe.model.path)
    if not (model / "config.json").is_file():
        subprocess.run([sys.executable, "models/convert_efficientnet_lite0.py"], cwd=REPO,
                       check=True)
    return Setup(model=model, images=Path(recipe.data.train[0]), recipe=recipe,
                 batch=args.batch, steps=args.steps, procs=args.procs, workers=args.workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--procs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16, help="global batch")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers per process")
    parser.add_argument("--smoke", action="store_true", help="1 round of 4 steps")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.steps = 1, 4
    setup = make_setup(args)
    runs: list[Run] = []
    print(*HEADER, sep="\n", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        recipe = bench_recipe(setup, root)
        for rnd in range(args.rounds):
            order = TOOLS if rnd % 2 == 0 else TOOLS[::-1]
            for tool in order:
                runs.append(run_trainer(setup, root, rnd) if tool == "trainer"
                            else run_sft_launch(setup, recipe, root, rnd))
                print(*rows(runs[-1:]), sep="\n", flush=True)
            if len({r.train_rows for r in runs}) > 1:
                raise RuntimeError(f"the tools loaded different data: {runs[-2:]}")
    lines, medians = table(runs, setup)
    write_report("image_peer_bench", {
        "setup": {"model": str(setup.model), "images": str(setup.images),
                  "train_rows": runs[0].train_rows, "global_batch": setup.batch,
                  "steps": setup.steps, "procs": setup.procs, "threads": setup.threads,
                  "loader_workers": setup.workers, "lr": setup.recipe.train.lr,
                  "seed": setup.recipe.train.seed, "smoke": args.smoke},
        "median_ratios": medians, "runs": [asdict(r) for r in runs]}, lines)


if __name__ == "__main__":
    main()
