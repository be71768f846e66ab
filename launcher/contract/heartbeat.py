"""`logs/heartbeat/rank-<R>.json`: each rank's liveness and progress, for the hang watchdog."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from launcher.contract.records import JsonRecord


class Phase(StrEnum):
    """What a rank is doing; every phase but TRAIN gets the longer (slow-phase) allowance."""

    STARTUP = "startup"
    PREPROCESS = "preprocessing"
    TRAIN = "training"
    EVAL = "evaluation"
    CHECKPOINT = "checkpointing"
    SAVE = "saving the final model"
    DONE = "done"  # the rank has finished (or stopped): never stalled


@dataclass(frozen=True)
class Heartbeat(JsonRecord):
    """`progress` counts units of work done (steps, eval batches, rows tokenized); `alive`
    counts the beats of the rank's watchdog thread, which go on while the rank waits."""

    rank: int
    host: str
    pid: int
    phase: Phase
    progress: int
    step: int
    alive: int
