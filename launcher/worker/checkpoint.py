"""Checkpoints: every rank writes into `.step-N.tmp`, rank 0 adds the manifest and renames it.

On resume rank 0 picks the newest checkpoint whose files match its manifest (a truncated or
corrupt one is skipped, with a message) and tells the others; the engine then loads it, also
at another world size than it was written at.
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from accelerate.utils import broadcast_object_list, gather_object

from launcher.contract.checkpoints import (
    checkpoint_folders,
    newest_step,
    newest_valid,
    write_manifest,
)
from launcher.contract.events import Checkpointed, CheckpointFailed, EventLog
from launcher.contract.records import JsonRecord
from launcher.contract.run_folder import RunFolder
from launcher.worker.engines.base import Engine

STATE_FILE = "trainer_state.json"


@dataclass
class TrainerState(JsonRecord):
    """What the loop needs to continue exactly where it stopped, and the run's counters over
    all its launches (so that a resumed run's summary covers the whole run)."""

    step: int = 0
    samples: int = 0
    tokens: int = 0
    wall_s: float = 0.0  # wall time of the launches until this state
    train_s: float = 0.0  # of which in optimizer steps
    steps_timed: int = 0  # the steps train_s covers
    real_tokens: int = 0  # rank 0's tokens, and those computed (padding included)
    computed_tokens: int = 0
    last_loss: float | None = None
    first_step_s: float | None = None  # the first launch's start to its first step

    def token_efficiency(self) -> float | None:
        """Real tokens / tokens computed (padding lowers it; padding-free packing keeps 1.0)."""
        return self.real_tokens / self.computed_tokens if self.computed_tokens else None


class CheckpointClock:
    """`train.save_every_minutes` on rank 0's clock (never due elsewhere: the ranks agree on
    it in the step's all-reduce)."""

    def __init__(self, minutes: float | None, main: bool) -> None:
        self.seconds = 60 * minutes if minutes and main else None
        self.reset()

    def reset(self) -> None:
        """A checkpoint starts now."""
        self.last = time.monotonic()

    def due(self) -> bool:
        return self.seconds is not None and time.monotonic() - self.last >= self.seconds


class CheckpointNotWritten(Exception):
    """Some rank could not write its part of the checkpoint of `step` (a full disk, a quota):
    what was written is removed, and the newest complete checkpoint stands."""

    def __init__(self, step: int, reason: str) -> None:
        super().__init__(f"the checkpoint of step {step} could not be written ({reason})")
        self.step, self.reason = step, reason


@dataclass
class _Pending:
    """A checkpoint begun: the state it holds, where it is written, and how its writing ended
    (None: it did; a Future of that when written in the background)."""

    state: TrainerState
    tmp: Path
    outcome: Future | None
    failure: str | None


class Checkpointer:
    """Writes `step-N` completely or not at all, one at a time, in the foreground or (where
    the engine can, with `background`) in the background; says so in the event log and keeps
    the `keep` newest. A write that fails on any rank fails on all of them: the checkpoint is
    removed, the newest complete one named in the event log, CheckpointNotWritten raised."""

    def __init__(self, engine: Engine, folder: RunFolder, keep: int, events: EventLog,
                 background: bool) -> None:
        self.engine, self.folder, self.keep, self.events = engine, folder, keep, events
        self.background, self.pending = background, None

    def save(self, state: TrainerState, *, wait: bool = False) -> None:
        """Begin the checkpoint of `state` (every rank, after finishing the previous one);
        in the background unless `wait` or the engine cannot: then it is complete on return."""
        self.finish()
        accelerator = self.engine.accelerator
        tmp, state = self.folder.checkpoint_in_progress(state.step), dataclasses.replace(state)
        if accelerator.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        written: list[Future | None] = [None]

        def write() -> None:
            written[0] = self.engine.save_async(tmp) if self.background and not wait else None
            if written[0] is None:
                self.engine.save(tmp)

        failure, outcome = _failure(write), None
        if written[0] is not None:  # the manifest is hashed in the background too
            outcome = _then(written[0], lambda: self._describe(state, tmp))
        self.pending = _Pending(state, tmp, outcome, failure)
        if outcome is None:
            self.finish()

    def _describe(self, state: TrainerState, tmp: Path) -> str | None:
        """Rank 0: the trainer state and the manifest (every file's hash) into `tmp`."""
        if not self.engine.accelerator.is_main_process:
            return None
        return _failure(lambda: (state.write(tmp / STATE_FILE),
                                 write_manifest(tmp, state.step, self.engine.plan.world_size)))

    def written(self) -> bool:
        """On rank 0: the background write has ended (the ranks agree on it in the step's
        all-reduce, then all call `finish`)."""
        pending = self.pending
        return bool(pending and pending.outcome and pending.outcome.done()
                    and self.engine.accelerator.is_main_process)

    def finish(self) -> None:
        """Every rank: wait for the checkpoint begun, then complete it (rename, the oldest
        removed, `Checkpointed`) or remove it (CheckpointNotWritten)."""
        pending, self.pending = self.pending, None
        if pending is None:
            return
        engine, folder, state = self.engine, self.folder, pending.state
        main = engine.accelerator.is_main_process
        failure = pending.failure or (pending.outcome.result() if pending.outcome
                                      else self._describe(state, pending.tmp))
        if failure is not None:  # a full disk often says only "unexpected pos" (torch.save)
            free = shutil.disk_usage(folder.checkpoints).free
            failure += (f"; {free / 2**20:.1f} MiB free where checkpoints go on "
                        f"{socket.gethostname()}")
        failures = gather_object([failure]) if engine.plan.world_size > 1 else [failure]
        failure = next((f for f in failures if f is not None), None)
        if failure is not None:
            if main:
                shutil.rmtree(pending.tmp, ignore_errors=True)
            engine.accelerator.wait_for_everyone()
            newest = newest_step(folder.checkpoints)
            self.events.write(CheckpointFailed(step=state.step, reason=failure, newest=(
                folder.named(folder.checkpoint(newest)) if newest else None)))
            raise CheckpointNotWritten(state.step, failure)
        if main:
            final = folder.checkpoint(state.step)
            if final.exists():
                shutil.rmtree(final)
            pending.tmp.rename(final)
            for _, old in checkpoint_folders(folder.checkpoints)[self.keep:]:
                shutil.rmtree(old, ignore_errors=True)
        engine.accelerator.wait_for_everyone()
        self.events.write(Checkpointed(step=state.step))


def _then(written: Future, describe: Callable[[], str | None]) -> Future:
    """A future of why the background write, then `describe` (in the writer's thread), failed
    (None: neither did); it always ends, whatever they raise."""
    outcome: Future = Future()

    def complete(done: Future) -> None:
        try:
            outcome.set_result(_failure(done.result) or describe())
        except BaseException as err:  # never leave `finish` waiting
            outcome.set_result(f"{type(err).__name__}: {err}")

    written.add_done_callback(complete)
    return outcome


def _failure(write: Callable[[], object]) -> str | None:
    """Why `write` could not write (a full disk, a quota, a vanished folder); None: it did.
    torch.save says RuntimeError, and torch DCP raises its CheckpointException (no Exception)
    on every rank when any failed."""
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        write()
    except (OSError, RuntimeError) as err:
        return f"{type(err).__name__}: {err}"
    except CheckpointException as err:
        cause = next((exc for exc, _trace in err.failures.values()), err)
        return f"{type(cause).__name__}: {cause}"
    return None


def load_latest(engine: Engine, root: Path, events: EventLog) -> TrainerState | None:
    """Restore model, optimizer, scheduler and RNG states from the newest valid checkpoint."""
    chosen: list[tuple[str, int] | None] = [None]
    if engine.accelerator.is_main_process:
        def skipped(folder: Path, why: str) -> None:
            events.message(f"--resume: skipping {folder.parent.name}/{folder.name}: {why}")

        found = newest_valid(root, hashes=True, skipped=skipped)
        chosen = [(str(found[0]), found[1].world_size) if found else None]
    if engine.plan.world_size > 1:
        chosen = broadcast_object_list(chosen)
    if chosen[0] is None:
        return None
    path, saved_world = Path(chosen[0][0]), chosen[0][1]
    engine.load(path, saved_world)
    return TrainerState.read(path / STATE_FILE)
