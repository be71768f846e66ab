"""The plan's memory section: per-strategy estimates from the model config, and `auto`'s pick."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

from launcher.errors import RecipeError
from launcher.plan.memory import (
    STRATEGIES,
    DoesNotFit,
    ModelShape,
    choose_strategy,
    estimate,
    parse_bytes,
    read_model_shape,
)
from launcher.recipe.schema import Recipe

# How a memory-plan strategy maps onto the recipe's strategy + offload settings.
RECIPE_STRATEGY = {"ddp": ("ddp", []), "zero2": ("zero2", []), "fsdp": ("fsdp", []),
                   "zero3": ("zero3", []), "zero3_offload": ("zero3", ["optimizer", "params"])}


def device_memory_bytes(recipe: Recipe, device: str, recipe_file: str) -> int | None:
    """The recipe's `distributed.device_memory`, else what this machine has (None if unknown)."""
    text = recipe.distributed.device_memory
    if text:
        try:
            return parse_bytes(text)
        except ValueError as err:
            raise RecipeError(recipe_file, "distributed.device_memory", str(err),
                              "e.g. '80GiB'") from None
    if device == "cuda":
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


def model_shape(recipe: Recipe, model_path: str) -> ModelShape | None:
    """The model's shape from its local config.json; None for a hub id not on this machine."""
    config = Path(model_path) / "config.json"
    if not config.is_file():
        return None
    try:
        return read_model_shape(config, task=recipe.task.kind, num_labels=recipe.task.num_labels)
    except ValueError:
        return None  # a family the planner cannot size: plan without a memory estimate


def memory_section(shape: ModelShape | None, *, recipe: Recipe, world_size: int,
                   procs_per_node: int, micro: int, precision: str,
                   device_memory: int | None) -> dict[str, Any]:
    """Estimates for every strategy at this world size (what plan.json records)."""
    if shape is None:
        return {"note": "model config not available on this machine: no memory estimate"}
    estimates = {
        name: asdict(estimate(shape, strategy=name, world_size=world_size,
                              micro_batch_size=micro, seq_len=recipe.data.max_length,
                              precision=precision,
                              activation_checkpointing=recipe.train.activation_checkpointing,
                              device_memory_bytes=device_memory))
        for name in STRATEGIES
    }
    return {"model_parameters": shape.num_parameters, "approximate": shape.approximate,
            "device_memory_bytes": device_memory, "procs_per_node": procs_per_node,
            "estimates": estimates}


def auto_strategy(shape: ModelShape | None, *, recipe: Recipe, world_size: int,
                  procs_per_node: int, micro: int, precision: str, device_memory: int | None,
                  recipe_file: str) -> tuple[str, list[str], str]:
    """(strategy, offload, reason): the fastest strategy that fits, in STRATEGIES order."""
    if world_size == 1:
        return "ddp", [], "auto: one process, nothing to shard"
    if shape is None or device_memory is None:
        return "ddp", [], "auto: no model config or device memory to plan with; DDP"
    try:
        name = choose_strategy(shape, world_size=world_size, micro_batch_size=micro,
                               seq_len=recipe.data.max_length, precision=precision,
                               activation_checkpointing=recipe.train.activation_checkpointing,
                               device_memory_bytes=device_memory,
                               procs_per_node=procs_per_node)
    except DoesNotFit as err:
        raise RecipeError(recipe_file, "distributed.strategy", str(err),
                          "use more nodes, a smaller micro batch or max_length, or enable "
                          "train.activation_checkpointing") from None
    strategy, offload = RECIPE_STRATEGY[name]
    return strategy, offload, f"auto: {name} is the fastest strategy that fits in memory"
