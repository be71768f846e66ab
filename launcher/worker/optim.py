"""The optimizer (AdamW, no decay on 1-D parameters) and the learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from launcher.contract.plan import LrRange
from launcher.planner.lr_range import ramp
from launcher.recipe.schema import Recipe


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; biases and norm weights (1-D) get no weight decay."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    groups = [{"params": decay, "weight_decay": recipe.train.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel per tensor, no temporaries; the unfused step allocates two of each
    # parameter's size (under ZeRO a rank's whole flat partition: 1.2 GB on a 303M model, 2 ranks)
    return torch.optim.AdamW(groups, lr=recipe.train.lr, fused=True)


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, total_steps: int,
                   lr_range: LrRange | None = None) -> Any:
    """Warmup, then linear, cosine or constant; or the log-uniform ramp of an lr range test."""
    if lr_range is not None:
        def factor(step: int) -> float:
            return ramp(lr_range.min_lr, lr_range.max_lr, lr_range.steps, step) / recipe.train.lr

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    train = recipe.train
    warmup = train.warmup_steps
    if warmup is None:
        warmup = round(train.warmup_ratio * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(train.schedule, warmup,
                                                                  total_steps))


def lr_factor(schedule: str, warmup: int, total_steps: int) -> Callable[[int], float]:
    """The factor on the peak lr at step `s`: a linear warmup from 0, then a linear decay to 0,
    a half cosine to 0, or constant. transformers' schedules of these names, to the bit (a unit
    test compares them), written out because `transformers.optimization` imports peft: 1.7 s
    of every start."""
    def factor(step: int) -> float:
        if step < warmup:
            return float(step) / float(max(1, warmup))
        if schedule == "constant":
            return 1.0
        if schedule == "linear":
            return max(0.0, float(total_steps - step) / float(max(1, total_steps - warmup)))
        progress = float(step - warmup) / float(max(1, total_steps - warmup))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))  # cosine

    return factor
