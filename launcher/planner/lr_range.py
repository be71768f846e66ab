"""The learning-rate range test's arithmetic: the exponential ramp, the smoothed loss, where it
diverges, and the suggestion (torch-free; `sft-launch lr-find` runs the short run itself)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

SMOOTHING = 0.98  # exponential moving average of the loss, bias-corrected (fastai, Smith 2017)
DIVERGED = 4.0  # the smoothed loss above 4x its minimum: the run has diverged
# The slope at each point: a least-squares line through the raw losses of the 2k+1 ramp steps
# around it (k = FIT_HALF_WIDTH; about 0.8 decade at the default 100 steps over 7 decades).
# It averages the noise out without lag: the EMA trails its inputs, and the steepest point of
# the smoothed curve sits about a third of a decade too high (tests/unit/test_lr_range.py).
FIT_HALF_WIDTH = 5


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


def fitted_slope(lrs: Sequence[float], losses: Sequence[float], index: int,
                 half: int = FIT_HALF_WIDTH) -> float:
    """d loss / d ln(lr) at `index`: the least-squares slope over indices index +- half."""
    xs = [math.log(lr) for lr in lrs[index - half:index + half + 1]]
    ys = losses[index - half:index + half + 1]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


def suggest(lrs: Sequence[float], losses: Sequence[float]) -> Suggestion:
    """The lr where the loss falls fastest per log-lr (`fitted_slope` over the raw losses),
    between the noisy first tenth and the lowest point of the smoothed loss before it
    diverges; the lr of the smoothed minimum / 10 when the loss never falls."""
    curve = smoothed(losses)
    end = diverged_at(curve)
    end = len(curve) if end is None else end
    bottom = min(range(end), key=lambda i: curve[i])
    half = FIT_HALF_WIDTH
    slopes = [(fitted_slope(lrs, losses, i, half), i)
              for i in range(max(half, end // 10), min(bottom + 1, end - half))]
    if slopes:
        slope, index = min(slopes)
        if slope < 0:
            return Suggestion(lrs[index], "steepest descent", index)
    return Suggestion(lrs[bottom] / 10, "minimum / 10", bottom)
