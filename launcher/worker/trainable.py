"""What a run trains (`TrainingSpec`: plain values) and what an engine builds from it
(`Trainable`): the task's model (`build_model`, LoRA applied), its optimizer and its schedule.

The engine decides how the model is built (whole, or on the meta device to be sharded) and when
the optimizer and schedule are (after the model is wrapped); it calls the builders here and in
`launcher.worker.optim` itself, with nothing called back into the worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from launcher.recipe.schema import Recipe
from launcher.tasks.base import EncodedData, Task
from launcher.tasks.lora import apply_lora


@dataclass(frozen=True)
class TrainingSpec:
    """The task with its encoded data, the recipe, and the run's length in optimizer steps."""

    task: Task
    data: EncodedData
    recipe: Recipe
    total_steps: int
    steps_per_epoch: int


@dataclass(frozen=True)
class Trainable:
    """What `Engine.build` built: the model as the strategy wraps or shards it, the
    optimizer over it and the learning-rate schedule."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any


def build_model(spec: TrainingSpec, *, meta: bool) -> torch.nn.Module:
    """The task's pretrained model, with LoRA adapters where the recipe has them; `meta`: the
    same architecture without weights (for a sharded load), whose LoRA is not announced."""
    model = spec.task.load_model(spec.data, meta)
    return apply_lora(model, spec.recipe, announce=not meta)
