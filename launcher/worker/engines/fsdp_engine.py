"""The `fsdp` strategy, with torch FSDP2: `fully_shard` on every transformer block, then the root.

The model is built on the meta device and sharded before any weight exists; rank 0 then reads
the pretrained weights and broadcasts them, each rank keeping its shard (as torchtune's
`load_from_full_model_state_dict`). The same code on GPUs (NCCL) and CPUs (gloo): Accelerate's
own FSDP never activates on a CPU host. Checkpoints use torch.distributed.checkpoint (each rank
writes its shards); the final model is gathered to rank 0 only, tensor by tensor, through CPU.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

import torch
from accelerate import Accelerator

from launcher.contract.plan import Plan
from launcher.contract.reports import HeldBytes
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import Device, Strategy
from launcher.worker.blocks import transformer_blocks
from launcher.worker.engines import dcp_checkpoint
from launcher.worker.engines.base import (
    Engine,
    group_kwargs,
    numel_bytes,
    optimizer_state_tensors,
)
from launcher.worker.optim import make_optimizer, make_scheduler
from launcher.worker.shards import local_shard
from launcher.worker.trainable import Trainable, TrainingSpec, build_model


class FsdpEngine(Engine):
    """`fsdp`: parameters, gradients and optimizer state sharded across all ranks (FSDP2)."""

    def __init__(self, plan: Plan, folder: RunFolder, timeout: timedelta) -> None:
        super().__init__(plan, folder, timeout)
        self.accelerator = Accelerator(
            cpu=plan.device is Device.CPU,
            mixed_precision="no",  # FSDP2's own MixedPrecisionPolicy casts
            kwargs_handlers=group_kwargs(plan, timeout),
            project_dir=str(folder.path),
        )

    def build(self, spec):
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(self.plan.device.value, (self.plan.world_size,))
        policy = MixedPrecisionPolicy()
        if self.plan.precision.is_half:
            half = getattr(torch, self.plan.precision.torch_name)
            policy = MixedPrecisionPolicy(param_dtype=half, reduce_dtype=torch.float32)
        with torch.random.fork_rng(devices=[]):  # no weights, no random numbers drawn
            model = build_model(spec, meta=True)  # every rank: the architecture, no weights
        for block in transformer_blocks(model):
            fully_shard(block, mesh=mesh, mp_policy=policy)
        fully_shard(model, mesh=mesh, mp_policy=policy)
        load_sharded(model, spec if self.accelerator.is_main_process else None)
        self.model = model
        self.optimizer = make_optimizer(model, spec.recipe)
        self.scheduler = make_scheduler(self.optimizer, spec.recipe, spec.total_steps,
                                        self.plan.lr_find)
        return Trainable(model, self.optimizer, self.scheduler)

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

    def save(self, folder):
        dcp_checkpoint.save(self.model, self.optimizer, folder, self.scheduler)

    def save_async(self, folder):
        return dcp_checkpoint.save_async(self.model, self.optimizer, folder, self.scheduler)

    def load(self, folder, saved_world_size):
        dcp_checkpoint.load(self.model, self.optimizer, folder, self.scheduler)

    def full_state_dict(self):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(self.model, options=options)
        return state if self.accelerator.is_main_process else None

    def unwrapped(self):
        return self.model

    def active_strategy(self):
        from torch.distributed.fsdp import FSDPModule

        return Strategy.FSDP if isinstance(self.model, FSDPModule) else None

    def held_bytes(self):
        params = [local_shard(p) for p in self.model.parameters()]
        grads = [local_shard(p.grad) for p in self.model.parameters() if p.grad is not None]
        if not grads:  # between steps gradients are freed: count what a step holds
            grads = [p for p, q in zip(params, self.model.parameters(), strict=True)
                     if q.requires_grad]
        return HeldBytes(params=numel_bytes(iter(params)), grads=numel_bytes(iter(grads)),
                         optimizer_state=numel_bytes(optimizer_state_tensors(self.optimizer)),
                         master_params=0)


def load_sharded(model: torch.nn.Module, spec: TrainingSpec | None) -> None:
    """Fill a sharded meta-device `model` with the pretrained weights: rank 0 (the one given
    the `spec`) builds the whole model on the host and broadcasts it tensor by tensor; every
    rank keeps only its shard of each. No rank but 0 ever holds a full copy, and rank 0 holds
    one on the host only, never on the device."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    full = build_model(spec, meta=False).state_dict() if spec is not None else {}
    # Every rank continues with the random state rank 0 has after building (fresh heads drew
    # from it), as under DDP, where every rank builds: the same dropout masks, the same run.
    state = [torch.get_rng_state()]
    torch.distributed.broadcast_object_list(state, src=0)
    torch.set_rng_state(state[0])
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True,
                                                               broadcast_from_rank0=True))
    del full
    if hasattr(model, "tie_weights"):  # a load by assignment unties shared embeddings
        model.tie_weights()
