"""What the training loop needs from a strategy (`Engine`), and the helpers engines share.

Every engine's `backward` takes the loss already normalised for the whole global batch (summed
over micro-batches it is the token-weighted mean), and reports what is really active
(`active_strategy`, `active_offload`) and what each rank holds (`held_bytes`), so the worker can
refuse a wrong setup and tests can prove sharding.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

from launcher.contract.plan import Plan
from launcher.contract.reports import HeldBytes
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import GradientSync, Offload, Strategy
from launcher.worker.shards import local_shard
from launcher.worker.trainable import Trainable, TrainingSpec


def group_kwargs(plan: Plan, timeout: timedelta) -> list[Any]:
    """The process group's backend and timeout (none for one process: no group at all); DDP's
    settings under DDP."""
    if plan.world_size == 1:
        return []
    group = InitProcessGroupKwargs(backend=plan.device.process_group_backend, timeout=timeout)
    if plan.active_strategy is not Strategy.DDP:
        return [group]
    # Gradients as views into DDP's all-reduce buckets: no copy of every gradient into them
    # each step (the quickstart on 2 CPU processes: 85 samples/s instead of 68-76).
    return [group, DistributedDataParallelKwargs(gradient_as_bucket_view=True)]


class Engine(ABC):
    """Build, backward, step, checkpoint and consolidate the weights under one strategy."""

    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    gradient_sync: GradientSync | None = None  # set by `build` under DDP

    def __init__(self, plan: Plan, folder: RunFolder, timeout: timedelta) -> None:
        self.plan = plan

    @abstractmethod
    def build(self, spec: TrainingSpec) -> Trainable:
        """Build the spec's model as the strategy loads it (whole, or each rank its shard),
        wrap or shard it, then build the optimizer on the result and the schedule on that;
        returns the three (the engine keeps them too, to step and checkpoint)."""

    @abstractmethod
    def micro_step(self, last: bool) -> contextlib.AbstractContextManager:
        """Context for one micro-batch; gradients are synchronised on the `last` one."""

    @abstractmethod
    def backward(self, loss: torch.Tensor) -> None: ...

    @abstractmethod
    def step(self, max_norm: float) -> float:
        """Clip, step the optimizer, zero the gradients; returns the pre-clip grad norm."""

    @abstractmethod
    def save(self, folder: Path) -> None:
        """Every rank writes its part of a checkpoint into `folder`."""

    def save_async(self, folder: Path) -> Future | None:
        """`save` in the background, once the tensors are copied to host memory: a future
        done when every rank's part is written; None where this engine cannot (then `save`)."""
        return None

    @abstractmethod
    def load(self, folder: Path, saved_world_size: int) -> None:
        """Restore a checkpoint written at `saved_world_size` ranks (maybe not this one)."""

    @abstractmethod
    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The consolidated weights on rank 0 (None elsewhere), gathered without a full copy on
        every rank."""

    @abstractmethod
    def active_strategy(self) -> Strategy | None:
        """The strategy really running (None: one plain, unwrapped process)."""

    def active_offload(self) -> tuple[Offload, ...]:
        return ()

    @abstractmethod
    def held_bytes(self) -> HeldBytes:
        """Bytes this rank holds: parameters, gradients, optimizer state (Adam moments) and the
        optimizer's fp32 master copy of the parameters (ZeRO keeps one even in fp32)."""

    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def drop_optimizer_state(self) -> None:
        """Free the optimizer's moments: training is over and its last checkpoint written, so
        the final gather of the whole model does not come on top of them."""
        inner = self.optimizer  # Accelerate's wrapper, then DeepSpeed's, then torch's AdamW
        while hasattr(inner, "optimizer"):
            inner = inner.optimizer
        inner.state.clear()


def numel_bytes(tensors: Iterator[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def optimizer_state_tensors(optimizer: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                yield local_shard(value)
