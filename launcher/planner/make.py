"""A recipe's plan: every 'auto' resolved into a decision (device, precision, batch, strategy,
threads per process, tracking mode), with the memory plan behind the strategy (no torch)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from launcher.contract.errors import RecipeError
from launcher.contract.plan import Plan, WorldSpan
from launcher.contract.vocabulary import (
    BackendKind,
    Device,
    Offload,
    Precision,
    Strategy,
    TrackingMode,
)
from launcher.planner.batch import batch_arithmetic, micro_token_budget
from launcher.planner.memory_plan import (
    auto_strategy,
    device_memory_bytes,
    memory_plan,
    model_shape,
)
from launcher.planner.model_path import resolve_model_path
from launcher.planner.names import recipe_name
from launcher.recipe.schema import Recipe


def make_plan(recipe: Recipe, *, recipe_file: str, backend: BackendKind, gpus_here: int) -> Plan:
    """Resolve every 'auto' in the recipe into a concrete, checkable decision."""
    dist = recipe.distributed
    world = dist.nodes * dist.procs_per_node
    device = _device(recipe, backend, gpus_here)
    if device is Device.CUDA and backend is BackendKind.LOCAL and dist.procs_per_node > gpus_here:
        raise RecipeError(recipe_file, "distributed.procs_per_node",
                          f"{dist.procs_per_node} processes but {gpus_here} GPU(s) on this machine",
                          f"use --procs-per-node {gpus_here}")
    precision = _precision(recipe, device, recipe_file)
    batch = batch_arithmetic(recipe, world, recipe_file)
    model_path = resolve_model_path(recipe.model.path, recipe_file, recipe.model.revision)
    tokenizer = recipe.model.tokenizer
    draft = Plan(  # the layout without a strategy: what the memory probe builds the model from
        recipe_name=recipe_name(recipe, recipe_file),
        recipe_file=str(Path(recipe_file).resolve()),
        backend=backend,
        nodes=dist.nodes,
        procs_per_node=dist.procs_per_node,
        world_size=world,
        device=device,
        precision=precision,
        strategy=Strategy.DDP,
        strategy_reason="",
        batch=batch,
        model_path=model_path,
        tokenizer_path=(resolve_model_path(tokenizer, recipe_file, None, "model.tokenizer")
                        if tokenizer else model_path),
        tracking_mode=tracking_mode(recipe.tracking.mode),
        trackers=() if recipe.tracking.mode == "disabled" else tuple(recipe.tracking.to),
        threads_per_proc=max(1, _cpus_per_node(recipe, backend) // dist.procs_per_node),
        world_history=(WorldSpan(from_step=0, nodes=dist.nodes,
                                 procs_per_node=dist.procs_per_node),),
    )
    shape = model_shape(recipe, draft)
    device_memory = device_memory_bytes(recipe, device, recipe_file)
    sizes = {"recipe": recipe, "world_size": world, "procs_per_node": dist.procs_per_node,
             "micro": batch.micro, "precision": precision, "device_memory": device_memory,
             "micro_tokens": micro_token_budget(recipe, device, Strategy.DDP, recipe_file)}
    if dist.strategy == "auto":
        strategy, offload, reason = auto_strategy(shape, recipe_file=recipe_file, **sizes)
    else:
        strategy, reason = dist.strategy, "set in the recipe"
        offload = tuple(kind for kind, on in ((Offload.OPTIMIZER, dist.offload_optimizer),
                                              (Offload.PARAMS, dist.offload_params)) if on)
    batch = dataclasses.replace(batch, micro_tokens=micro_token_budget(
        recipe, device, Strategy(strategy), recipe_file))
    return dataclasses.replace(draft, strategy=Strategy(strategy), strategy_reason=reason,
                               batch=batch, offload=offload,
                               memory=memory_plan(shape, device=device, **sizes))


def _cpus_per_node(recipe: Recipe, backend: BackendKind) -> int:
    """CPUs the processes of one node share: Slurm's allocation, else this machine's."""
    if backend is BackendKind.SLURM and recipe.slurm.cpus_per_task:
        return recipe.slurm.cpus_per_task
    return os.cpu_count() or 1


def _device(recipe: Recipe, backend: BackendKind, gpus_here: int) -> Device:
    gpus = recipe.slurm.gpus_per_node if backend is BackendKind.SLURM else gpus_here
    return Device.CUDA if gpus > 0 else Device.CPU


def _precision(recipe: Recipe, device: Device, recipe_file: str) -> Precision:
    wanted = recipe.train.precision
    if wanted == "auto":
        return Precision.BF16 if device is Device.CUDA else Precision.FP32
    if device is Device.CPU and wanted is Precision.FP16:
        raise RecipeError(recipe_file, "train.precision", "fp16 needs a GPU",
                          "use 'fp32' or 'bf16' on CPU, or 'auto'")
    return wanted


def tracking_mode(mode: str) -> TrackingMode:
    """auto -> online only when an API key is available; the key itself is never recorded."""
    if mode != "auto":
        return TrackingMode(mode)
    return TrackingMode.ONLINE if os.environ.get("WANDB_API_KEY") else TrackingMode.OFFLINE
