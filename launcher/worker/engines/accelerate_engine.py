"""One process, DDP, and DeepSpeed ZeRO-2/3 (+ CPU offload), all through Accelerate.

DeepSpeed needs a gloo/NCCL process group created by Accelerate and *not* `cpu=True` (that
silently drops DeepSpeed), so the Accelerator is built per strategy here.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DeepSpeedPlugin, DistributedType

from launcher.contract.plan import Plan
from launcher.contract.reports import HeldBytes
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import Device, GradientSync, Offload, Strategy
from launcher.worker.engines import dcp_checkpoint, shared_memory, universal
from launcher.worker.engines.base import (
    Engine,
    group_kwargs,
    numel_bytes,
    optimizer_state_tensors,
)
from launcher.worker.optim import make_optimizer, make_scheduler
from launcher.worker.shards import local_shard
from launcher.worker.trainable import Trainable, build_model

ZERO_STRATEGY = {2: Strategy.ZERO2, 3: Strategy.ZERO3}


class AccelerateEngine(Engine):
    """Single process, DDP, ZeRO-2 and ZeRO-3 through Accelerate (DeepSpeed for ZeRO)."""

    def __init__(self, plan: Plan, folder: RunFolder, timeout: timedelta) -> None:
        super().__init__(plan, folder, timeout)
        self.zero_stage = plan.strategy.zero_stage
        deepspeed = None
        if self.zero_stage:
            config = json.loads(folder.deepspeed.read_text())
            deepspeed = DeepSpeedPlugin(hf_ds_config=config, zero3_init_flag=self.zero_stage == 3)
        self.accelerator = Accelerator(
            cpu=plan.device is Device.CPU and not self.zero_stage,
            mixed_precision=plan.precision.accelerate_name,
            gradient_accumulation_steps=plan.batch.grad_accum,
            deepspeed_plugin=deepspeed,
            kwargs_handlers=group_kwargs(plan, timeout),
            project_dir=str(folder.path),
        )

    def build(self, spec):
        # Under ZeRO-3 the plugin's zero3_init_flag makes from_pretrained build the model in
        # deepspeed.zero.Init: each rank allocates only its partition of every parameter.
        model = build_model(spec, meta=False)
        self.model, self.optimizer = self.accelerator.prepare(
            model, make_optimizer(model, spec.recipe))
        if self.active_strategy() is Strategy.DDP:
            self.gradient_sync = (shared_memory.install(self.model)
                                  if self.plan.device is Device.CPU
                                  else GradientSync.PROCESS_GROUP)
        # After Accelerate's prepare: ZeRO-3 regroups the parameters of the optimizer it wraps.
        self.scheduler = make_scheduler(self.optimizer, spec.recipe, spec.total_steps,
                                        self.plan.lr_find)
        if self.zero_stage:
            self.accelerator.register_for_checkpointing(self.scheduler)
        return Trainable(self.model, self.optimizer, self.scheduler)

    def micro_step(self, last: bool):
        if self.zero_stage:  # DeepSpeed counts the micro-batches itself: grad_accum per step
            return self.accelerator.accumulate(self.model)
        # DDP all-reduces on the last micro-batch of a rank's step only, however many it has
        # (a token budget cuts long rows into more); one process has nothing to synchronise.
        return contextlib.nullcontext() if last else self.accelerator.no_sync(self.model)

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
        if self.zero_stage:  # DeepSpeed's own format: each rank's partitions
            self.accelerator.save_state(str(folder))
        else:
            dcp_checkpoint.save(self.model, self.optimizer.optimizer, folder, self.scheduler,
                                self.accelerator.scaler)

    def save_async(self, folder):
        if self.zero_stage:  # DeepSpeed's writer is synchronous here
            return None
        return dcp_checkpoint.save_async(self.model, self.optimizer.optimizer, folder,
                                         self.scheduler, self.accelerator.scaler)

    def load(self, folder, saved_world_size):
        if not self.zero_stage:
            dcp_checkpoint.load(self.model, self.optimizer.optimizer, folder, self.scheduler,
                                self.accelerator.scaler)
        elif saved_world_size == self.plan.world_size:
            self.accelerator.load_state(str(folder))
        else:
            self._load_universal(folder)

    def _load_universal(self, folder: Path) -> None:
        """A ZeRO checkpoint of another world size, through DeepSpeed's universal format."""
        converted = folder.parent / f".{folder.name}.universal"
        if self.accelerator.is_main_process:
            universal.convert(folder, converted)
        self.accelerator.wait_for_everyone()
        config = self.model._config  # read by DeepSpeed at load time only
        config.load_universal_checkpoint = True
        try:
            self.accelerator.load_state(str(converted))
        finally:
            config.load_universal_checkpoint = False
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            shutil.rmtree(converted, ignore_errors=True)

    def full_state_dict(self):
        state = self.accelerator.get_state_dict(self.model)
        return state if self.accelerator.is_main_process else None

    def active_strategy(self):
        if self.accelerator.distributed_type == DistributedType.DEEPSPEED:
            return ZERO_STRATEGY.get(self.model.zero_optimization_stage())
        if isinstance(self.model, torch.nn.parallel.DistributedDataParallel):
            return Strategy.DDP
        return None

    def active_offload(self):
        if self.accelerator.distributed_type != DistributedType.DEEPSPEED:
            return ()
        return tuple(kind for kind, config in ((Offload.OPTIMIZER,
                                                self.model.zero_offload_optimizer()),
                                               (Offload.PARAMS, self.model.zero_offload_param()))
                     if _offloaded(config))

    def held_bytes(self):
        params = [local_shard(p) for p in self.model.parameters()]
        inner = getattr(self.optimizer, "optimizer", self.optimizer)
        if self.zero_stage:
            inner = getattr(inner, "optimizer", inner)  # DeepSpeedZeroOptimizer -> torch AdamW
            masters = _fp32_partitions(self.model.optimizer)
            # This rank's gradient partition has the size of its fp32 partition.
            grads = numel_bytes(iter(masters))
        else:
            masters = []
            grads = numel_bytes(p for p in self.model.parameters() if p.requires_grad)
        return HeldBytes(params=numel_bytes(iter(params)), grads=grads,
                         optimizer_state=numel_bytes(optimizer_state_tensors(inner)),
                         master_params=numel_bytes(iter(masters)))


def _offloaded(config: Any) -> bool:
    """Whether a DeepSpeed offload section really moves something off the device."""
    device = getattr(config, "device", None)
    return device is not None and getattr(device, "value", device) != "none"


def _fp32_partitions(zero_optimizer: Any) -> list[torch.Tensor]:
    """This rank's flat fp32 partitions in a ZeRO-2 or ZeRO-3 optimizer."""
    return getattr(zero_optimizer, "single_partition_of_fp32_groups", None) or getattr(
        zero_optimizer, "fp32_partitioned_groups_flat", [])
