"""The peer of bench/peer_bench.py: TRL's SFTTrainer, packed (bfd, padding-free), on the same
model, tokenizer and conversations; prints one JSON line of what it measured.

    .venv/bin/python bench/peer_trl.py MODEL DATA.jsonl --batch 3 --steps 20
Needs the optional `bench` extra (pip install -e '.[bench]').
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time

STARTED = time.time()  # before the heavy imports: time to first step counts them, as for a CLI

import torch  # noqa: E402
from datasets import load_dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402


class Clock(TrainerCallback):
    """The wall time at the end of every optimizer step."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.time())


class CountingTrainer(SFTTrainer):
    """SFTTrainer that counts the tokens of every micro-batch (padding-free: all are real)."""

    tokens: list[int]

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.tokens.append(int(inputs["input_ids"].numel()))
        return super().training_step(model, inputs, num_items_in_batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32,
                                                 attn_implementation="sdpa")
    with tempfile.TemporaryDirectory() as out:
        config = SFTConfig(output_dir=out, per_device_train_batch_size=args.batch,
                           max_steps=args.steps, learning_rate=1e-3, lr_scheduler_type="constant",
                           packing=True, packing_strategy="bfd", padding_free=True,
                           max_length=args.max_length, completion_only_loss=True,
                           logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                           dataloader_num_workers=0, seed=0, disable_tqdm=True)
        clock = Clock()
        trainer = CountingTrainer(model=model, args=config, processing_class=tokenizer,
                                  train_dataset=load_dataset("json", data_files=args.data,
                                                             split="train"),
                                  callbacks=[clock])
        trainer.tokens = []
        trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    print(json.dumps({"step_ends": clock.ends, "tokens": trainer.tokens, "started": STARTED,
                      "losses": losses,
                      "high_water": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


if __name__ == "__main__":
    main()
