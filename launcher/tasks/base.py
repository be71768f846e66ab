"""What every task provides to the training loop (`Task`), and what it prepares (`Prepared`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from launcher.contract.plan import Plan
from launcher.contract.reports import DataStats
from launcher.recipe.schema import Recipe

Batch = dict[str, torch.Tensor]


@dataclass
class Prepared:
    """Tokenized train/eval examples plus what was learned from the data."""

    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    stats: DataStats
    label_names: list[str] | None = None


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
