"""The lr range test on the workers: optimizer steps on the recipe's real data, model and
strategy, the learning rate rising log-uniformly (the scheduler's ramp), until the last step or
until the smoothed loss diverges; rank 0 writes the curve (`lr_curve.json`)."""

from __future__ import annotations

from launcher.contract.events import EventLog, TrainLogged
from launcher.contract.heartbeat import Phase
from launcher.contract.plan import LrRange
from launcher.contract.reports import LrCurve
from launcher.contract.run_folder import RunFolder
from launcher.plan.lr_range import diverged_at, smoothed
from launcher.worker.checkpoint import TrainerState
from launcher.worker.loop import TrainLoop


def run_lr_range(loop: TrainLoop, lr_range: LrRange, steps_per_epoch: int,
                 folder: RunFolder, events: EventLog) -> LrCurve:
    """Every rank steps; the loss is all-reduced, so every rank stops at the same step."""
    state = TrainerState()
    lrs, losses = [], []
    diverged = False
    loop.model.train()
    inputs = loop.inputs(0, lr_range.steps)
    while state.step < lr_range.steps and not diverged:
        lr = loop.scheduler.get_last_lr()[0]
        result = loop.step(next(inputs))
        state.step += 1
        loop.watchdog.progress(Phase.TRAIN, state.step)
        lrs.append(lr)
        losses.append(result.loss)
        events.write(TrainLogged(step=state.step, loss=result.loss, lr=lr,
                                 grad_norm=result.grad_norm, epoch=state.step / steps_per_epoch))
        diverged = diverged_at(smoothed(losses)) is not None
    curve = LrCurve(lrs=tuple(lrs), losses=tuple(losses), diverged=diverged)
    if loop.acc.is_main_process:
        curve.write(folder.lr_curve)
    return curve
