"""The learning-rate range test's arithmetic: the exponential ramp, the smoothed loss, where it
diverges, and the suggestion (torch-free; `sft-launch lr-find` runs the short run itself)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

SMOOTHING = 0.98  # exponential moving average of the loss, bias-corrected (fastai, Smith 2017)
DIVERGED = 4.0  # the smoothed loss above 4x its minimum: the run has diverged


def ramp(min_lr: float, max_lr: float, steps: int, step: int) -> float:
    """The learning rate of optimizer step `step` (0-based) on a log-uniform ramp."""
    if steps < 2:
        return min_lr
    return min_lr * (max_lr / min_lr) ** (step / (steps - 1))


def smoothed(losses: Sequence[float], beta: float = SMOOTHING) -> list[float]:
    """Bias-corrected exponential moving average of `losses`."""
    average, out = 0.0, []
    for index, loss in enumerate(losses, 1):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta**index))
    return out


def diverged_at(curve: Sequence[float]) -> int | None:
    """The first index where the smoothed loss exceeds DIVERGED x its minimum so far."""
    best = math.inf
    for index, value in enumerate(curve):
        if not math.isfinite(value) or value > DIVERGED * best:
            return index
        best = min(best, value)
    return None


@dataclass(frozen=True)
class Suggestion:
    lr: float
    method: str  # "steepest descent" or "minimum / 10"
    index: int  # where on the curve


def suggest(lrs: Sequence[float], curve: Sequence[float]) -> Suggestion:
    """The lr where the smoothed loss falls fastest per log-lr (central differences, before the
    divergence and leaving the noisy first tenth out); the lr of the minimum / 10 when the
    curve never falls."""
    end = diverged_at(curve)
    end = len(curve) if end is None else end
    start = max(1, end // 10)
    slopes = [((curve[i + 1] - curve[i - 1]) / math.log(lrs[i + 1] / lrs[i - 1]), i)
              for i in range(start, end - 1)]
    if slopes:
        slope, index = min(slopes)
        if slope < 0:
            return Suggestion(lrs[index], "steepest descent", index)
    index = min(range(end), key=lambda i: curve[i])
    return Suggestion(lrs[index] / 10, "minimum / 10", index)
