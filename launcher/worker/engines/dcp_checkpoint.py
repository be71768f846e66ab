"""Checkpoints of one process, DDP and FSDP2 in torch.distributed.checkpoint (DCP) format.

Each rank writes its shards (a replicated tensor once), and any of these strategies at any world
size loads them: DCP reshards. The scheduler, the RNG and a loss scaler go beside, one small
file per rank; a rank that did not exist when the checkpoint was written takes rank 0's
scheduler and keeps its own RNG (the data order is a function of the step, not of the RNG).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _extra_file(folder: Path, rank: int) -> Path:
    return folder / f"extra_state_{rank}.pt"


def save(model: torch.nn.Module, optimizer: torch.optim.Optimizer, folder: Path,
         scheduler: Any, scaler: Any = None) -> None:
    """Every rank writes its part of `folder`."""
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(folder))
    extra = {"scheduler": scheduler.state_dict(), "rng": _rng_state(),
             "scaler": scaler.state_dict() if scaler is not None else None}
    torch.save(extra, _extra_file(folder, _rank()))


def load(model: torch.nn.Module, optimizer: torch.optim.Optimizer, folder: Path,
         scheduler: Any, scaler: Any = None) -> None:
    """Restore what `save` wrote, at this world size."""
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optimizer"])
    own = _extra_file(folder, _rank())
    extra = torch.load(own if own.exists() else _extra_file(folder, 0), weights_only=False)
    scheduler.load_state_dict(extra["scheduler"])
    if scaler is not None and extra["scaler"] is not None:
        scaler.load_state_dict(extra["scaler"])
    if own.exists():
        _set_rng_state(extra["rng"])


def _rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
