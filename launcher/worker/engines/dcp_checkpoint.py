"""Checkpoints of one process, DDP and FSDP2 in torch.distributed.checkpoint (DCP) format.

Each rank writes its shards (a replicated tensor once), and any of these strategies at any world
size loads them: DCP reshards. The scheduler, the RNG and a loss scaler go beside, one small
file per rank; a rank that did not exist when the checkpoint was written takes rank 0's
scheduler and keeps its own RNG (the data order is a function of the step, not of the RNG).
"""

from __future__ import annotations

import random
from concurrent.futures import Future
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
    _save_extra(folder, scheduler, scaler)


def save_async(model: torch.nn.Module, optimizer: torch.optim.Optimizer, folder: Path,
               scheduler: Any, scaler: Any = None) -> Future:
    """`save` in the background: returns once the tensors are copied to host memory; the
    future is done when every rank's files are written (failed: it raises, on every rank).
    The writer's collectives go over a gloo group of their own, never the training's."""
    model_state, optimizer_state = get_state_dict(model, optimizer)
    future = dcp.async_save({"model": model_state, "optimizer": optimizer_state},
                            checkpoint_id=str(folder), process_group=_writer_group())
    _save_extra(folder, scheduler, scaler)
    return future


_WRITER_GROUP: list[Any] = []


def _writer_group() -> Any:
    """The background writer's process group (created by every rank at its first async save,
    which all ranks reach at the same step); None without a process group."""
    if not torch.distributed.is_initialized():
        return None
    if not _WRITER_GROUP:
        _WRITER_GROUP.append(torch.distributed.new_group(backend="gloo"))
    return _WRITER_GROUP[0]


def _save_extra(folder: Path, scheduler: Any, scaler: Any) -> None:
    """This rank's scheduler, RNG and loss scaler states (small: written at once)."""
    folder.mkdir(parents=True, exist_ok=True)
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
