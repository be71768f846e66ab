"""The lr schedules equal transformers' schedules of the same names at every step."""

from __future__ import annotations

import pytest
import torch
from transformers import get_scheduler

from launcher.recipe.schema import Recipe
from launcher.worker.optim import make_scheduler

TRANSFORMERS_NAME = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


def _lrs(scheduler, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return out


@pytest.mark.parametrize("schedule", sorted(TRANSFORMERS_NAME))
@pytest.mark.parametrize(("warmup", "total"), [(0, 17), (5, 40), (3, 3), (0, 1)])
def test_schedule_equals_transformers(schedule: str, warmup: int, total: int) -> None:
    recipe = Recipe.model_validate({
        "model": {"path": "unused"}, "task": {"kind": "causal_lm"},
        "data": {"train": ["unused.jsonl"]},
        "train": {"lr": 3e-4, "schedule": schedule, "warmup_steps": warmup},
    })
    ours = make_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-4),
                          recipe, total)
    theirs = get_scheduler(TRANSFORMERS_NAME[schedule],
                           torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-4),
                           num_warmup_steps=warmup, num_training_steps=total)
    assert _lrs(ours, total + 2) == _lrs(theirs, total + 2)
