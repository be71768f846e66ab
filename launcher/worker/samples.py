"""Generated samples at every evaluation (`train.sample_prompts`, causal LM): every rank
generates the same few prompts greedily, so a sharded model (FSDP2, ZeRO-3) runs each forward
on all ranks together; rank 0 logs them to the event log and as a table to each tracker."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from launcher.contract.events import EventLog, Sample, Sampled
from launcher.contract.plan import Plan
from launcher.contract.vocabulary import Strategy
from launcher.recipe.schema import Recipe
from launcher.tasks.base import Example, Task, batches
from launcher.trackers.base import Trackers
from launcher.worker.engines.base import Engine

SHARDED = (Strategy.FSDP, Strategy.ZERO3)  # a forward needs every rank's parameter shards


class Sampler:
    """Generates `train.sample_prompts` with the model being trained."""

    def __init__(self, task: Task, eval_examples: list[Example], recipe: Recipe, plan: Plan,
                 engine: Engine) -> None:
        self.task, self.engine = task, engine
        self.max_tokens = recipe.train.sample_max_tokens
        self.prompts = task.sample_prompts(eval_examples)
        # what each prompt is, as text (template and all): decoded once, shown at every eval
        self.texts = [task.tokenizer.decode(p["input_ids"]) for p, _ in self.prompts]
        self.synced = plan.active_strategy in SHARDED

    def __bool__(self) -> bool:
        return bool(self.prompts)

    @torch.no_grad()
    def generate(self, device: torch.device, autocast: Any) -> list[Sample]:
        """The completions of every prompt, one at a time (no padding to confuse a template)."""
        model = self.engine.unwrapped()
        model.eval()
        samples = []
        for (prompt, reference), text in zip(self.prompts, self.texts, strict=True):
            batch = next(batches(self.task, [prompt], 1, device))
            with autocast():
                completion = self.task.predict(model, batch, self.max_tokens,
                                               synced=self.synced)[0]
            samples.append(Sample(prompt=text, completion=completion, reference=reference))
        model.train()
        return samples

    def log(self, samples: list[Sample], step: int, events: EventLog, tracker: Trackers) -> None:
        events.write(Sampled(step=step, samples=tuple(samples)))
        columns = [field.name for field in dataclasses.fields(Sample)]
        header = ("step", *columns)
        tracker.table("eval/samples", list(header),
                      [[step, *(getattr(s, c) or "" for c in columns)] for s in samples],
                      step=step)
