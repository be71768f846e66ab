"""Batch arithmetic: the global batch as micro x grad_accum x world, and the token budget of one
micro-batch (no torch)."""

from __future__ import annotations

from launcher.contract.errors import RecipeError
from launcher.contract.plan import Batch
from launcher.contract.vocabulary import Device, Strategy
from launcher.recipe.schema import Recipe
from launcher.tasks.registry import task_spec

# Tokens per micro-batch on CPU: on 2 cores, the peer bench's 34M Llama ran 720 tokens/s in
# micro-batches of 2 packed rows (~1,020 tokens), 678 at 4 and 675 at 8 (RSS 1.9, 2.6, 3.3 GiB).
CPU_MICRO_TOKENS = 1024


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
    (`Strategy.takes_token_budget`), and for a task whose micro-batches are rows (images,
    recordings: `TaskSpec.counts_tokens`)."""
    wanted = recipe.train.micro_batch_tokens
    if not task_spec(recipe.task.kind).counts_tokens:
        if wanted:
            raise RecipeError(recipe_file, "train.micro_batch_tokens",
                              f"{recipe.task.kind} batches whole rows, not tokens",
                              "leave it unset and set train.micro_batch_size")
        return None
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
