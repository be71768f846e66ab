"""Checkpoints: every rank writes into `.step-N.tmp`, rank 0 adds the manifest and renames it.

On resume rank 0 picks the newest checkpoint whose files match its manifest (a truncated or
corrupt one is skipped, with a message) and tells the others; the engine then loads it, also
at another world size than it was written at.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from accelerate.utils import broadcast_object_list

from launcher.contract.checkpoints import checkpoint_folders, newest_valid, write_manifest
from launcher.contract.events import EventLog
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


def save_checkpoint(engine: Engine, folder: RunFolder, state: TrainerState, keep: int) -> Path:
    """Write `step-N` completely or not at all; keep the `keep` newest."""
    accelerator = engine.accelerator
    final, tmp = folder.checkpoint(state.step), folder.checkpoint_in_progress(state.step)
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    engine.save(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state.write(tmp / STATE_FILE)
        write_manifest(tmp, state.step, engine.plan.world_size)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for _, old in checkpoint_folders(folder.checkpoints)[keep:]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


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
