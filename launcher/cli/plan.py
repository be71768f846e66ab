"""Commands that look before a run: plan (the memory plan of every strategy) and schema."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from launcher.cli.app import NodesOpt, PpnOpt, RecipeArg, SetOpt, app, recipe_with_cli
from launcher.contract.vocabulary import BackendKind
from launcher.progress import console
from launcher.recipe.schema import Recipe

PANEL = "Before a run"


@app.command("plan", rich_help_panel=PANEL)
def plan_command(
    recipe_file: RecipeArg,
    nodes: NodesOpt = None,
    procs_per_node: PpnOpt = None,
    device_memory: Annotated[
        str | None, typer.Option(help="Memory of one device, e.g. 80GiB (default: detected).")
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Show the memory plan: bytes per device for every strategy, and what auto picks.

    Reads the model's config.json only (no weights), so it sizes a 70B model on a laptop.
    """
    from launcher.plan.plan import make_plan
    from launcher.plan.report import memory_report

    extra = list(set_ or []) + ([f"distributed.device_memory='{device_memory}'"]
                                if device_memory else [])
    recipe = recipe_with_cli(recipe_file, extra, nodes, procs_per_node)
    on_cluster = recipe.distributed.nodes > 1 or recipe.slurm.gpus_per_node > 0
    backend = BackendKind.SLURM if on_cluster else BackendKind.LOCAL
    plan = make_plan(recipe, recipe_file=str(recipe_file), backend=backend, gpus_here=0)
    console.print(memory_report(plan, recipe))


@app.command(rich_help_panel=PANEL)
def schema() -> None:
    """Print the recipe's JSON schema (for editor completion and validation)."""
    print(json.dumps(Recipe.model_json_schema(), indent=2))


