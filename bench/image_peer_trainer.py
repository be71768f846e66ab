"""The Trainer side of bench/image_peer_bench.py: transformers' image-classification example."""

# Run by the bench, alone or under `torchrun --nproc_per_node N`:
#     python bench/image_peer_trainer.py MODEL IMAGE_FOLDER OUT_DIR --batch 16 --steps 30
# As examples/pytorch/image-classification/run_image_classification.py: `imagefolder` data,
# AutoImageProcessor, images transformed on the fly (`with_transform`), a collate_fn stacking
# pixel_values and labels, remove_unused_columns=False, no eval, no saving, report_to=[]. No
# augmentation (torchvision is not installable here; the sft-launch side runs without it too).
# One change: dataloader_drop_last=True, so every step is a full batch, as in sft-launch.
# Time to first step counts from $BENCH_STARTED (set by the bench just before it starts us).

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from datasets import load_dataset
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)


class Clock(TrainerCallback):
    """The wall time at the end of every optimizer step, and the peak RSS once trained."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.trained_rss = 0

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.ends.append(time.time())

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trained_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class TimedIterator:
    """An iterator whose `next` calls are timed: the loop's wait for the DataLoader."""

    def __init__(self, inner: Iterator[Any], waits: list[float]) -> None:
        self.inner, self.waits = inner, waits

    def __iter__(self) -> TimedIterator:
        return self

    def __next__(self) -> Any:
        t0 = time.time()
        try:
            return next(self.inner)
        finally:
            self.waits[-1] += time.time() - t0


class MeasuredTrainer(Trainer):
    """Trainer that times each optimizer step's wait for data and counts its images."""

    waits: list[float]  # seconds waiting for the DataLoader, per optimizer step
    images: list[int]  # images this rank trained on, per optimizer step

    def get_batch_samples(self, epoch_iterator: Iterator[Any], num_batches: int,
                          device: torch.device) -> tuple[list[Any], Any]:
        self.waits.append(0.0)
        self.images.append(0)
        return super().get_batch_samples(TimedIterator(epoch_iterator, self.waits), num_batches,
                                         device)

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any],
                      num_items_in_batch: Any = None) -> torch.Tensor:
        self.images[-1] += int(inputs["pixel_values"].shape[0])
        return super().training_step(model, inputs, num_items_in_batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("images", help="an image folder: one subfolder per label")
    parser.add_argument("out", type=Path, help="folder for rank-<R>.json")
    parser.add_argument("--batch", type=int, default=16, help="global batch")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--warmup-steps", type=int, default=0)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    torch.set_num_threads(args.threads)

    dataset = load_dataset("imagefolder", data_dir=args.images, split="train")
    names = dataset.features["label"].names
    processor = AutoImageProcessor.from_pretrained(args.model)

    def transform(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        pixels = processor(images=[image.convert("RGB") for image in batch["image"]],
                           return_tensors="pt")["pixel_values"]
        batch["pixel_values"] = list(pixels)
        return batch

    def collate(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {"pixel_values": torch.stack([e["pixel_values"] for e in examples]),
                "labels": torch.tensor([e["label"] for e in examples])}

    model = AutoModelForImageClassification.from_pretrained(
        args.model, num_labels=len(names), id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)}, ignore_mismatched_sizes=True)
    with tempfile.TemporaryDirectory() as out:
        config = TrainingArguments(
            output_dir=out, per_device_train_batch_size=args.batch // world, max_steps=args.steps,
            learning_rate=args.lr, warmup_steps=args.warmup_steps, weight_decay=args.weight_decay,
            lr_scheduler_type="linear", seed=args.seed, use_cpu=True,
            ddp_backend="gloo" if world > 1 else None,
            remove_unused_columns=False, dataloader_num_workers=args.workers,
            dataloader_drop_last=True, eval_strategy="no", save_strategy="no", report_to=[],
            logging_steps=1, disable_tqdm=True, log_level="warning")
        clock = Clock()
        trainer = MeasuredTrainer(model=model, args=config, train_dataset=dataset.with_transform(
            transform), data_collator=collate, processing_class=processor, callbacks=[clock])
        trainer.waits, trainer.images = [], []
        trainer.train()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"rank-{rank}.json").write_text(json.dumps({
        "rank": rank, "world_size": world, "threads": torch.get_num_threads(),
        "dataset_rows": len(dataset),
        "first_step_s": clock.ends[0] - float(os.environ.get("BENCH_STARTED", "nan")),
        "step_ends": clock.ends, "waits": trainer.waits,
        "images": trainer.images, "rss_after_training": clock.trained_rss,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


if __name__ == "__main__":
    main()
