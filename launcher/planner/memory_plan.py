"""The plan's memory section: every strategy's estimate for this run, and what `auto` picks."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import warnings
from pathlib import Path

from launcher.contract.errors import LaunchWarning, RecipeError
from launcher.contract.plan import MemoryPlan, Plan
from launcher.contract.vocabulary import Device, Offload, Precision, Strategy
from launcher.planner.lora_size import lora_trainable
from launcher.planner.memory import CANDIDATES, DoesNotFit, choose_strategy, estimate
from launcher.planner.memory_probe import ProbeFailed, probed_shape
from launcher.planner.model_shape import ModelShape, read_model_shape
from launcher.planner.sizes import parse_bytes
from launcher.recipe.schema import Recipe
from launcher.tasks.registry import task_spec


def device_memory_bytes(recipe: Recipe, device: Device, recipe_file: str) -> int | None:
    """The recipe's `distributed.device_memory`, else what this machine has (None if unknown)."""
    text = recipe.distributed.device_memory
    if text:
        try:
            return parse_bytes(text)
        except ValueError as err:
            raise RecipeError(recipe_file, "distributed.device_memory", str(err),
                              "e.g. '80GiB'") from None
    if device is Device.CUDA:
        return _gpu_memory()
    host = _host_memory()
    return host // recipe.distributed.procs_per_node if host else None


def _gpu_memory() -> int | None:
    if not shutil.which("nvidia-smi"):
        return None
    query = ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"]
    out = subprocess.run(query, capture_output=True, text=True, timeout=10)
    values = [int(v) for v in out.stdout.split() if v.strip().isdigit()]
    return min(values) * 2**20 if values else None


def _host_memory() -> int | None:
    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():
        return None
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def model_shape(recipe: Recipe, plan: Plan) -> ModelShape | None:
    """The model's shape: from its local config.json, or measured by the probe for the tasks
    that ask for it (images, audio); None for a hub id not on this machine."""
    config = Path(plan.model_path) / "config.json"
    if task_spec(recipe.task.kind).probed and config.is_file():
        try:
            return probed_shape(recipe, plan)
        except ProbeFailed as err:  # plan without a memory estimate, and say why
            warnings.warn(f"no memory estimate: measuring the model failed: {err}",
                          LaunchWarning, stacklevel=2)
            return None
    if not config.is_file():
        return None
    try:
        return read_model_shape(config, task=recipe.task.kind, num_labels=recipe.task.num_labels)
    except ValueError:
        return None  # a family the planner cannot size: plan without a memory estimate


def _with_adapters(shape: ModelShape, recipe: Recipe) -> tuple[ModelShape, int | None]:
    """The shape to plan with and its trainable parameters (None: all of them). Under LoRA the
    adapters and peft's copy of the head are extra parameters, and the only trainable ones."""
    lora = recipe.model.lora
    if lora is not None and shape.measured_trainable is not None:
        return shape, shape.measured_trainable  # the probe counted the adapters in
    trainable = lora_trainable(shape, lora) if lora is not None else None
    if trainable is None:
        return shape, None
    return dataclasses.replace(shape, num_parameters=shape.num_parameters + trainable), trainable


def memory_plan(shape: ModelShape | None, *, recipe: Recipe, world_size: int,
                procs_per_node: int, micro: int, micro_tokens: int | None,
                precision: Precision, device_memory: int | None,
                device: Device) -> MemoryPlan | None:
    """Estimates for every strategy at this world size (what plan.json records);
    `micro_tokens`: the token budget per micro-batch DDP would run under."""
    if shape is None:
        return None
    shape, trainable = _with_adapters(shape, recipe)
    estimates = tuple(
        estimate(shape, strategy=strategy, offload=offload, world_size=world_size,
                 micro_batch_size=micro, seq_len=recipe.data.max_length, precision=precision,
                 activation_checkpointing=recipe.train.activation_checkpointing,
                 device_memory_bytes=device_memory, device=device,
                 trainable_parameters=trainable, nodes=world_size // procs_per_node,
                 micro_tokens=micro_tokens)
        for strategy, offload in CANDIDATES
    )
    return MemoryPlan(model_parameters=shape.num_parameters, approximate=shape.approximate,
                      device_memory_bytes=device_memory, procs_per_node=procs_per_node,
                      estimates=estimates, hidden_size=shape.hidden_size,
                      block_parameters=shape.block_parameters)


def auto_strategy(shape: ModelShape | None, *, recipe: Recipe, world_size: int,
                  procs_per_node: int, micro: int, micro_tokens: int | None,
                  precision: Precision, device_memory: int | None,
                  recipe_file: str) -> tuple[Strategy, tuple[Offload, ...], str]:
    """(strategy, offload, reason): the fastest layout that fits, in CANDIDATES order."""
    if world_size == 1:
        return Strategy.DDP, (), "auto: one process, nothing to shard"
    if shape is None or device_memory is None:
        return Strategy.DDP, (), "auto: no model config or device memory to plan with; DDP"
    shape, trainable = _with_adapters(shape, recipe)
    try:
        chosen = choose_strategy(shape, world_size=world_size, micro_batch_size=micro,
                                 seq_len=recipe.data.max_length, precision=precision,
                                 activation_checkpointing=recipe.train.activation_checkpointing,
                                 device_memory_bytes=device_memory,
                                 procs_per_node=procs_per_node, trainable_parameters=trainable,
                                 micro_tokens=micro_tokens)
    except DoesNotFit as err:
        raise RecipeError(recipe_file, "distributed.strategy", str(err),
                          "use more nodes, a smaller micro batch or max_length, or enable "
                          "train.activation_checkpointing") from None
    return (chosen.strategy, chosen.offload,
            f"auto: {chosen.label} is the fastest strategy that fits in memory")
