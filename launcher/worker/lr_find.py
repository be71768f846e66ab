"""The lr range test on the workers: optimizer steps on the recipe's real data, model and
strategy, the learning rate rising log-uniformly (the scheduler's ramp), until the last step or
until the smoothed loss diverges; rank 0 writes the curve (`lr_curve.json`). The loop logs every
step."""

from __future__ import annotations

from launcher.contract.plan import LrRange
from launcher.contract.reports import LrCurve
from launcher.planner.lr_range import diverged_at, smoothed
from launcher.worker.loop import TrainLoop


def run_lr_range(loop: TrainLoop, lr_range: LrRange) -> LrCurve:
    """Every rank steps; the loss is all-reduced, so every rank stops at the same step."""
    lrs, losses = [], []
    diverged = False
    loop.model.train()
    inputs = loop.inputs(0, lr_range.steps)
    while loop.state.step < lr_range.steps and not diverged:
        result = loop.step(inputs)
        lrs.append(result.lr)
        losses.append(result.loss)
        diverged = diverged_at(smoothed(losses)) is not None
    curve = LrCurve(lrs=tuple(lrs), losses=tuple(losses), diverged=diverged)
    if loop.acc.is_main_process:
        curve.write(loop.folder.lr_curve)
    return curve
