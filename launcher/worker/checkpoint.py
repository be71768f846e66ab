"""Checkpoints: `checkpoints/step-N/`, written under a temporary name and renamed when complete."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from launcher.worker.engines.base import Engine

STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "trainer_state.json"


@dataclass
class TrainerState:
    """What the loop needs to continue exactly where it stopped."""

    step: int = 0
    samples: int = 0
    tokens: int = 0


def complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Checkpoints that finished writing (temporary folders never match), oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name))]
    return sorted(found)


def save_checkpoint(engine: Engine, root: Path, state: TrainerState, keep: int) -> Path:
    """All ranks write into `.step-N.tmp`; rank 0 renames it to `step-N` after a barrier."""
    accelerator = engine.accelerator
    final = root / f"step-{state.step}"
    tmp = root / f".step-{state.step}.tmp"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    engine.save(tmp)
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(asdict(state)) + "\n")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for _, old in complete_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_latest(engine: Engine, root: Path) -> TrainerState | None:
    """Restore model, optimizer, scheduler and RNG states from the newest complete checkpoint."""
    found = complete_checkpoints(root)
    if not found:
        return None
    _, path = found[-1]
    engine.load(path)
    return TrainerState(**json.loads((path / STATE_FILE).read_text()))
