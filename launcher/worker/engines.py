"""One engine per data-parallel strategy: prepare, backward, step, checkpoint, final weights.

- `AccelerateEngine`: single process, DDP, DeepSpeed ZeRO-2/3 (+ CPU offload) through
  Accelerate. DeepSpeed needs a gloo/NCCL process group created by Accelerate and *not*
  `cpu=True` (that silently drops DeepSpeed), so the Accelerator is built per strategy here.
- `Fsdp2Engine`: torch's own FSDP2 (`fully_shard` over a 1-D device mesh), on CPU (gloo) and GPU
  (NCCL) alike: Accelerate's FSDP never activates on a CPU host. Every transformer block (the
  model's `_no_split_modules` classes) is a shard unit, then the root. Checkpoints use
  torch.distributed.checkpoint (each rank writes its shards); the final model is gathered to
  rank 0 only, tensor by tensor, through CPU.

Every engine's `backward` takes the loss already normalised for the whole global batch (summed
over micro-batches it is the token-weighted mean), and reports what is really active
(`active_strategy`) and what each rank holds (`local_bytes`), so the worker can refuse a wrong
setup and tests can prove sharding.
"""

from __future__ import annotations

import contextlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DeepSpeedPlugin, DistributedType, InitProcessGroupKwargs

from launcher.plan.plan import Plan
from launcher.worker.shards import local_shard
from launcher.worker.startup import PROCESS_GROUP_TIMEOUT

OptimizerFactory = Callable[[torch.nn.Module], torch.optim.Optimizer]
MIXED = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def make_engine(plan: Plan, run_dir: Path, log_with: str | None) -> Engine:
    """The engine for the plan's strategy, with its Accelerator (process group, trackers)."""
    if plan.strategy == "fsdp" and plan.world_size > 1:
        return Fsdp2Engine(plan, run_dir, log_with)
    return AccelerateEngine(plan, run_dir, log_with)


def _group_kwargs(plan: Plan) -> list[InitProcessGroupKwargs]:
    """The process group's backend and timeout (none for one process: no group at all)."""
    if plan.world_size == 1:
        return []
    return [InitProcessGroupKwargs(backend="nccl" if plan.device == "cuda" else "gloo",
                                   timeout=PROCESS_GROUP_TIMEOUT)]


class Engine(ABC):
    """What the training loop needs from a strategy."""

    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    @abstractmethod
    def prepare(self, model: torch.nn.Module, make_optimizer: OptimizerFactory,
                scheduler_factory: Callable[[torch.optim.Optimizer], Any]) -> Any:
        """Wrap/shard the model, build the optimizer on the result; returns the scheduler."""

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

    @abstractmethod
    def load(self, folder: Path) -> None: ...

    @abstractmethod
    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The consolidated weights on rank 0 (None elsewhere), gathered without a full copy on
        every rank."""

    @abstractmethod
    def active_strategy(self) -> str: ...

    @abstractmethod
    def local_bytes(self) -> dict[str, int]:
        """Bytes this rank holds: parameters, gradients, optimizer state (Adam moments) and the
        optimizer's fp32 master copy of the parameters (ZeRO keeps one even in fp32)."""

    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)


def _numel_bytes(tensors: Iterator[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _optimizer_state_tensors(optimizer: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                yield local_shard(value)


class AccelerateEngine(Engine):
    """Single process, DDP, ZeRO-2 and ZeRO-3 through Accelerate (DeepSpeed for ZeRO)."""

    def __init__(self, plan: Plan, run_dir: Path, log_with: str | None) -> None:
        super().__init__(plan)
        self.zero_stage = {"zero2": 2, "zero3": 3}.get(plan.strategy, 0)
        deepspeed = None
        if self.zero_stage:
            config = json.loads((run_dir / "deepspeed.json").read_text())
            deepspeed = DeepSpeedPlugin(hf_ds_config=config)
        self.accelerator = Accelerator(
            cpu=plan.device == "cpu" and not self.zero_stage,
            mixed_precision=MIXED[plan.precision],
            gradient_accumulation_steps=plan.batch.grad_accum,
            deepspeed_plugin=deepspeed,
            kwargs_handlers=_group_kwargs(plan),
            log_with=log_with,
            project_dir=str(run_dir),
        )

    def prepare(self, model, make_optimizer, scheduler_factory):
        self.model, self.optimizer = self.accelerator.prepare(model, make_optimizer(model))
        # After prepare: ZeRO-3 regroups the parameters of the optimizer it wraps.
        scheduler = scheduler_factory(self.optimizer)
        self.accelerator.register_for_checkpointing(scheduler)
        return scheduler

    def micro_step(self, last: bool):
        return self.accelerator.accumulate(self.model)

    def backward(self, loss):
        # Accelerate (and DeepSpeed) divide by the accumulation steps; the loss is already
        # normalised for the whole global batch, so undo that division.
        self.accelerator.backward(loss * self.plan.batch.grad_accum)

    def step(self, max_norm):
        norm = self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm)
        self.optimizer.step()  # DeepSpeed stepped in backward(); this is then a no-op
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm) if norm is not None else float("nan")

    def save(self, folder):
        self.accelerator.save_state(str(folder))

    def load(self, folder):
        self.accelerator.load_state(str(folder))

    def full_state_dict(self):
        state = self.accelerator.get_state_dict(self.model)
        return state if self.accelerator.is_main_process else None

    def active_strategy(self):
        kind = self.accelerator.distributed_type
        if kind == DistributedType.DEEPSPEED:
            offload = [name for name, config in (("optimizer", self.model.zero_offload_optimizer()),
                                                 ("params", self.model.zero_offload_param()))
                       if _offloaded(config)]
            if offload != self.plan.offload:
                return f"zero{self.model.zero_optimization_stage()} offloading {offload}"
            return f"zero{self.model.zero_optimization_stage()}"
        if isinstance(self.model, torch.nn.parallel.DistributedDataParallel):
            return "ddp"
        if kind == DistributedType.NO and self.accelerator.num_processes == 1:
            return "single"
        return f"unsharded ({kind})"

    def local_bytes(self):
        params = [local_shard(p) for p in self.model.parameters()]
        inner = getattr(self.optimizer, "optimizer", self.optimizer)
        if self.zero_stage:
            inner = getattr(inner, "optimizer", inner)  # DeepSpeedZeroOptimizer -> torch AdamW
            masters = _fp32_partitions(self.model.optimizer)
            # This rank's gradient partition has the size of its fp32 partition.
            grads = _numel_bytes(iter(masters))
        else:
            masters = []
            grads = _numel_bytes(p for p in self.model.parameters() if p.requires_grad)
        return {"params": _numel_bytes(iter(params)), "grads": grads,
                "optimizer_state": _numel_bytes(_optimizer_state_tensors(inner)),
                "master_params": _numel_bytes(iter(masters))}


def _offloaded(config: Any) -> bool:
    """Whether a DeepSpeed offload section really moves something off the device."""
    device = getattr(config, "device", None)
    return device is not None and getattr(device, "value", device) != "none"


def _fp32_partitions(zero_optimizer: Any) -> list[torch.Tensor]:
    """This rank's flat fp32 partitions in a ZeRO-2 or ZeRO-3 optimizer."""
    return getattr(zero_optimizer, "single_partition_of_fp32_groups", None) or getattr(
        zero_optimizer, "fp32_partitioned_groups_flat", [])


class Fsdp2Engine(Engine):
    """torch FSDP2: parameters, gradients and optimizer state sharded across all ranks."""

    def __init__(self, plan: Plan, run_dir: Path, log_with: str | None) -> None:
        super().__init__(plan)
        self.accelerator = Accelerator(
            cpu=plan.device == "cpu",
            mixed_precision="no",  # FSDP2's own MixedPrecisionPolicy casts
            kwargs_handlers=_group_kwargs(plan),
            log_with=log_with,
            project_dir=str(run_dir),
        )

    def prepare(self, model, make_optimizer, scheduler_factory):
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(self.plan.device, (self.plan.world_size,))
        policy = MixedPrecisionPolicy()
        if self.plan.precision in ("bf16", "fp16"):
            half = torch.bfloat16 if self.plan.precision == "bf16" else torch.float16
            policy = MixedPrecisionPolicy(param_dtype=half, reduce_dtype=torch.float32)
        model = model.to(self.accelerator.device)
        for block in transformer_blocks(model):
            fully_shard(block, mesh=mesh, mp_policy=policy)
        fully_shard(model, mesh=mesh, mp_policy=policy)
        self.model = model
        self.optimizer = make_optimizer(model)
        self.scheduler = scheduler_factory(self.optimizer)
        return self.scheduler

    def micro_step(self, last: bool):
        self.model.set_requires_gradient_sync(last)
        return contextlib.nullcontext()

    def backward(self, loss):
        loss.backward()

    def step(self, max_norm):
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def _state(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, optimizer_state = get_state_dict(self.model, self.optimizer)
        return {"model": model_state, "optimizer": optimizer_state}

    def save(self, folder):
        import torch.distributed.checkpoint as dcp

        dcp.save(self._state(), checkpoint_id=str(folder))
        rank = self.accelerator.process_index
        torch.save({"scheduler": self.scheduler.state_dict(), "rng": _rng_state()},
                   folder / f"extra_state_{rank}.pt")

    def load(self, folder):
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import set_state_dict

        state = self._state()
        dcp.load(state, checkpoint_id=str(folder))
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optimizer"])
        rank = self.accelerator.process_index
        extra = torch.load(folder / f"extra_state_{rank}.pt", weights_only=False)
        self.scheduler.load_state_dict(extra["scheduler"])
        _set_rng_state(extra["rng"])

    def full_state_dict(self):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(self.model, options=options)
        return state if self.accelerator.is_main_process else None

    def unwrapped(self):
        return self.model

    def active_strategy(self):
        from torch.distributed.fsdp import FSDPModule

        return "fsdp" if isinstance(self.model, FSDPModule) else type(self.model).__name__

    def local_bytes(self):
        params = [local_shard(p) for p in self.model.parameters()]
        grads = [local_shard(p.grad) for p in self.model.parameters() if p.grad is not None]
        if not grads:  # between steps gradients are freed: count what a step holds
            grads = [p for p, q in zip(params, self.model.parameters(), strict=True)
                     if q.requires_grad]
        return {"params": _numel_bytes(iter(params)), "grads": _numel_bytes(iter(grads)),
                "optimizer_state": _numel_bytes(_optimizer_state_tensors(self.optimizer)),
                "master_params": 0}


def transformer_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks to shard one by one, found from the model (not a fixed class)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 1]
        blocks = list(max(lists, key=len)) if lists else []
    return blocks


def _rng_state() -> dict[str, Any]:
    import random

    import numpy as np

    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
