"""What every task provides to the training loop, and the data loading they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from launcher.plan.plan import Plan
from launcher.recipe.schema import Recipe

Batch = dict[str, torch.Tensor]


@dataclass
class Prepared:
    """Tokenized train/eval examples plus what was learned from the data."""

    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    label_names: list[str] | None = None
    stats: dict[str, int] = field(default_factory=dict)


@dataclass
class EvalOutput:
    """One eval batch: summed loss and its count, plus predictions for the task's metrics."""

    loss_sum: float
    count: int
    predictions: list[Any] = field(default_factory=list)
    references: list[Any] = field(default_factory=list)


class Task(ABC):
    """A task: tokenizer, data, model, loss and metrics. The loop knows nothing else."""

    def __init__(self, recipe: Recipe, plan: Plan) -> None:
        self.recipe = recipe
        self.plan = plan
        # (what, done, total) while preprocessing; the worker points it at the event log.
        self.report_progress: Callable[[str, int, int], None] = lambda *_: None

    @abstractmethod
    def load_tokenizer(self) -> Any: ...

    @abstractmethod
    def prepare(self, tokenizer: Any) -> Prepared: ...

    @abstractmethod
    def load_model(self, prepared: Prepared) -> torch.nn.Module: ...

    @abstractmethod
    def collate(self, examples: list[dict[str, Any]]) -> Batch: ...

    @abstractmethod
    def loss_sum(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        """Summed loss over the batch's loss-bearing units (samples or tokens) and their count."""

    @abstractmethod
    def evaluate(self, model: torch.nn.Module, batch: Batch) -> EvalOutput: ...

    @abstractmethod
    def metrics(self, loss_sum: float, count: int, predictions: list[Any],
                references: list[Any]) -> dict[str, float]: ...

    def count_units(self, example: dict[str, Any]) -> int:
        """Loss-bearing units in one example (1 sample by default)."""
        return 1

    def tokens_in(self, example: dict[str, Any]) -> int:
        return len(example["input_ids"])


def model_dtype(recipe: Recipe, plan: Plan) -> torch.dtype:
    """Weights in fp32 for mixed precision (master copy) unless the recipe says otherwise."""
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    return names.get(recipe.model.dtype, torch.float32)


def build_task(recipe: Recipe, plan: Plan) -> Task:
    """The task object for `task.kind`."""
    kind = recipe.task.kind
    if kind == "sequence_classification":
        from launcher.tasks.sequence_classification import SequenceClassification

        return SequenceClassification(recipe, plan)
    if kind == "causal_lm":
        from launcher.tasks.causal_lm import CausalLM

        return CausalLM(recipe, plan)
    if kind == "token_classification":
        from launcher.tasks.token_classification import TokenClassification

        return TokenClassification(recipe, plan)
    raise NotImplementedError(f"task.kind = {kind!r} is not available yet")
