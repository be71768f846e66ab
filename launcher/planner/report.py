"""`sft-launch plan`'s output: the plan's batch arithmetic, the memory table of every strategy and
the strategy the plan chose."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from launcher.contract.plan import Plan
from launcher.planner.sizes import format_bytes
from launcher.recipe.schema import Recipe
from launcher.tasks.registry import task_spec


def plan_report(plan: Plan, recipe: Recipe) -> RenderableType:
    """The batch arithmetic, bytes per device of every strategy, whether it fits, and the
    strategy chosen."""
    batch = plan.batch
    arithmetic = Text(f"batch: global {batch.global_size} = micro {batch.micro} x accumulation "
                      f"{batch.grad_accum} x world {batch.world}" + (
                          f", micro-batches of at most {batch.micro_tokens:,} tokens"
                          if batch.micro_tokens else ""))
    memory = plan.memory
    if memory is None:
        return Group(arithmetic, Text(
            "no memory estimate: the model's config.json is not on this machine, or its family "
            "is one the planner cannot size"))
    rows = (f"{plan.batch.micro} rows (activations measured)"
            if task_spec(recipe.task.kind).probed
            else f"{plan.batch.micro} x {recipe.data.max_length} tokens")
    table = Table(title=f"{plan.recipe_name}: {memory.model_parameters:,} parameters, "
                  f"{plan.world_size} processes ({plan.nodes} x {plan.procs_per_node}), "
                  f"{plan.precision}, micro batch {rows}")
    table.add_column("strategy", no_wrap=True, min_width=13)
    for column in ("params", "grads", "optimizer", "activ.", "per device", "fits"):
        table.add_column(column, justify="right", no_wrap=True)
    for est in memory.estimates:
        fits = {True: "yes", False: "no", None: "?"}[est.fits]
        table.add_row(est.label, *(format_bytes(n) for n in (
            est.params_bytes, est.grads_bytes, est.optimizer_bytes, est.activations_bytes,
            est.total_bytes)), fits)
    limit = memory.device_memory_bytes
    offload = f" + offload of {' and '.join(plan.offload)}" if plan.offload else ""
    chosen = Text(f"device memory: {format_bytes(limit) if limit else 'unknown'}; "
                  f"strategy: {plan.strategy}{offload} ({plan.strategy_reason})")
    return Group(arithmetic, table, chosen)
