"""Generated text at every evaluation (`train.generation_prompts`, causal LM): every rank
generates the same few prompts greedily, so a sharded model (FSDP2, ZeRO-3) runs each forward
on all ranks together; rank 0 logs them to the event log and as a table to each tracker."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from launcher.contract.events import EventLog, Generated, Generation
from launcher.contract.plan import Plan
from launcher.contract.vocabulary import Strategy
from launcher.recipe.schema import Recipe
from launcher.tasks.base import Example, Task, batches
from launcher.trackers.base import Trackers
from launcher.worker.engines.base import Engine

SHARDED = (Strategy.FSDP, Strategy.ZERO3)  # a forward needs every rank's parameter shards


class PromptGenerator:
    """Generates `train.generation_prompts` with the model being trained."""

    def __init__(self, task: Task, eval_examples: list[Example], recipe: Recipe, plan: Plan,
                 engine: Engine) -> None:
        self.task, self.engine = task, engine
        self.max_tokens = recipe.train.generation_max_tokens
        self.prompts = task.generation_prompts(eval_examples)
        # what each prompt is, as text (template and all): decoded once, shown at every eval
        self.texts = [task.tokenizer.decode(p["input_ids"]) for p, _ in self.prompts]
        self.synced = plan.active_strategy in SHARDED

    def __bool__(self) -> bool:
        return bool(self.prompts)

    @torch.no_grad()
    def generate(self, device: torch.device, autocast: Any) -> list[Generation]:
        """The completions of every prompt, one at a time (no padding to confuse a template)."""
        model = self.engine.unwrapped()
        model.eval()
        generations = []
        for (prompt, reference), text in zip(self.prompts, self.texts, strict=True):
            batch = next(batches(self.task, [prompt], 1, device))
            with autocast():
                completion = self.task.predict(model, batch, self.max_tokens,
                                               synced=self.synced)[0]
            generations.append(Generation(prompt=text, completion=completion, reference=reference))
        model.train()
        return generations

    def log(self, generations: list[Generation], step: int, events: EventLog,
            tracker: Trackers) -> None:
        events.write(Generated(step=step, generations=tuple(generations)))
        columns = [field.name for field in dataclasses.fields(Generation)]
        header = ("step", *columns)
        tracker.table("eval/generations", list(header),
                      [[step, *(getattr(s, c) or "" for c in columns)] for s in generations],
                      step=step)
