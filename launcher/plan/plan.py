"""Plan a run: world size, batch arithmetic, device, precision and strategy (no torch here)."""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from launcher.contract.checkpoints import newest_step
from launcher.contract.errors import RecipeError, UsageError
from launcher.contract.plan import Batch, Plan, WorldSpan
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import (
    BackendKind,
    Device,
    Offload,
    Precision,
    Strategy,
    TrackingMode,
)
from launcher.data.hub_data import HubData, HubDataError, is_hub_data
from launcher.plan.hub import hub_snapshot, is_hub_id
from launcher.plan.memory_plan import (
    auto_strategy,
    device_memory_bytes,
    memory_plan,
    model_shape,
)
from launcher.recipe.schema import Recipe

# Tokens per micro-batch on CPU: on 2 cores, the peer bench's 34M Llama ran 720 tokens/s in
# micro-batches of 2 packed rows (~1,020 tokens), 678 at 4 and 675 at 8 (RSS 1.9, 2.6, 3.3 GiB).
CPU_MICRO_TOKENS = 1024


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


def recipe_name(recipe: Recipe, recipe_file: str | Path) -> str:
    """The run's name: the recipe's `name`, else its file's stem made safe."""
    return recipe.name or safe_name(Path(recipe_file).stem)


def _cpus_per_node(recipe: Recipe, backend: BackendKind) -> int:
    """CPUs the processes of one node share: Slurm's allocation, else this machine's."""
    if backend is BackendKind.SLURM and recipe.slurm.cpus_per_task:
        return recipe.slurm.cpus_per_task
    return os.cpu_count() or 1


def batch_arithmetic(recipe: Recipe, world: int, recipe_file: str) -> Batch:
    """global = micro x grad_accum x world, or a clear error."""
    train = recipe.train
    global_size = train.global_batch_size
    micro = train.micro_batch_size
    if micro is None:
        if global_size % world:
            raise RecipeError(
                recipe_file, "train.global_batch_size",
                f"{global_size} is not divisible by the world size {world} "
                f"({recipe.distributed.nodes} node(s) x {recipe.distributed.procs_per_node} "
                "process(es))",
                f"use a multiple of {world}, e.g. {_next_multiple(global_size, world)}",
            )
        micro = global_size // world
    per_step = micro * world
    if global_size % per_step:
        raise RecipeError(
            recipe_file, "train.global_batch_size",
            f"{global_size} is not divisible by micro_batch_size {micro} x world size {world} "
            f"= {per_step}",
            f"use a multiple of {per_step}, e.g. {_next_multiple(global_size, per_step)}, "
            "or change train.micro_batch_size",
        )
    return Batch(global_size=global_size, micro=micro, grad_accum=global_size // per_step,
                 world=world)


def micro_token_budget(recipe: Recipe, device: Device, strategy: Strategy,
                       recipe_file: str) -> int | None:
    """The most tokens one micro-batch computes: the recipe's, else CPU_MICRO_TOKENS on CPU;
    None (micro rows each) on GPU, when 0, and under a strategy that takes no token budget
    (`Strategy.takes_token_budget`)."""
    wanted = recipe.train.micro_batch_tokens
    if wanted is not None and wanted > 0 and not strategy.takes_token_budget:
        raise RecipeError(recipe_file, "train.micro_batch_tokens",
                          f"a token budget per micro-batch needs strategy ddp, not {strategy}",
                          "leave train.micro_batch_tokens unset (or 0), or set "
                          "train.micro_batch_size")
    if wanted is None:
        wanted = CPU_MICRO_TOKENS if device is Device.CPU and strategy.takes_token_budget else 0
    return wanted or None


def _next_multiple(value: int, base: int) -> int:
    return max(base, (value + base - 1) // base * base)


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


def safe_name(text: str) -> str:
    """A run name from a file name: letters, digits, '.', '_' and '-' only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "run"


def tracking_mode(mode: str) -> TrackingMode:
    """auto -> online only when an API key is available; the key itself is never recorded."""
    if mode != "auto":
        return TrackingMode(mode)
    return TrackingMode.ONLINE if os.environ.get("WANDB_API_KEY") else TrackingMode.OFFLINE


def resolve_model_path(value: str, recipe_file: str, revision: str | None,
                       key: str = "model.path") -> str:
    """`package:<module>` -> the folder its get_model_path() names; a Hub id -> its snapshot
    in the Hugging Face cache (fetched first if need be); a local folder unchanged."""
    if is_hub_id(value):
        return hub_snapshot(value, revision, recipe_file, key)
    if not value.startswith("package:"):
        return value
    module_name = value.removeprefix("package:")
    try:
        module = importlib.import_module(module_name)
        return str(Path(module.get_model_path()).resolve())
    except (ImportError, AttributeError) as err:
        raise RecipeError(recipe_file, "model.path",
                          f"cannot get a model folder from package {module_name!r} ({err})",
                          f"pip install the package that provides {module_name}") from None


def gpus_on_this_machine() -> int:
    """Count NVIDIA GPUs without importing torch."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def check_inputs(recipe: Recipe, plan: Plan, recipe_file: str) -> None:
    """The model folder (when local) and every data file must exist before anything launches."""
    for key, value in (("model.path", plan.model_path), ("model.tokenizer", plan.tokenizer_path)):
        if value.startswith("/") and not Path(value).is_dir():
            raise RecipeError(recipe_file, key, f"model folder not found: {value}",
                              "check the path (relative paths start at the recipe's folder); "
                              "for a tiny offline model: sft-launch make-tiny-model DIR")
    for key in ("train", "eval"):
        for path in getattr(recipe.data, key):
            if is_hub_data(path):
                _fetch_hub_data(path, key, recipe_file)
            elif not (Path(path).is_file() or Path(path).is_dir()):
                raise RecipeError(recipe_file, f"data.{key}", f"data file not found: {path}",
                                  "check the path (relative paths start at the recipe's folder; "
                                  "a folder is read as an image folder)")


def _fetch_hub_data(value: str, key: str, recipe_file: str) -> None:
    """An `hf:` source must load here: from the Hub into the `datasets` cache of HF_HOME (which
    the job reads offline), or from that cache when offline."""
    try:
        HubData.parse(value, key).load()
    except HubDataError as err:
        raise RecipeError(recipe_file, f"data.{key}", f"cannot load {err}",
                          "run where the Hub is reachable once (with the same HF_HOME, shared "
                          "with the compute nodes), and check the name and its ?subset= and "
                          "?split=") from None
    except ValueError as err:
        raise RecipeError(recipe_file, f"data.{key}", str(err),
                          'e.g. "hf:openai/gsm8k?subset=main&split=train"') from None


# What a resume may not change: the checkpoints hold this model, sharded so, in this precision,
# and the sample order is a function of the global batch. Nodes and processes may change.
KEPT_ON_RESUME = ("strategy", "offload", "precision", "model_path")


def resumed_plan(folder: RunFolder, plan: Plan) -> Plan:
    """The plan of a resumed run: as before, maybe with another layout (recorded in the
    world history from the step the run resumes at)."""
    if not folder.plan.is_file():
        raise UsageError(f"--resume: {folder.path} is not a run folder (no plan.json)")
    previous = Plan.read(folder.plan)
    changed = [f"{key}: {getattr(previous, key)} -> {getattr(plan, key)}"
               for key in KEPT_ON_RESUME if getattr(previous, key) != getattr(plan, key)]
    if previous.batch.global_size != plan.batch.global_size:
        changed.append(f"global batch: {previous.batch.global_size} -> {plan.batch.global_size}")
    if changed:
        raise UsageError(f"--resume: the run in {folder.path} was planned differently ("
                         + "; ".join(changed) + "); a resume may change the number of nodes and "
                         "processes per node, nothing else")
    history = previous.world_history
    if (history[-1].nodes, history[-1].procs_per_node) != (plan.nodes, plan.procs_per_node):
        history = (*history, WorldSpan(from_step=newest_step(folder.checkpoints),
                                       nodes=plan.nodes, procs_per_node=plan.procs_per_node))
    return dataclasses.replace(plan, world_history=history)
