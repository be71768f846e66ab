"""A recipe of the repository planned for a local run on this machine: with another model, or
the quickstart as it is."""

from __future__ import annotations

from pathlib import Path

from launcher.contract.plan import Plan
from launcher.contract.vocabulary import BackendKind
from launcher.planner.make import make_plan
from launcher.recipe.load import load_recipe
from launcher.recipe.schema import Recipe

QUICKSTART = Path(__file__).resolve().parents[2] / "recipes" / "quickstart.toml"


def planned(recipe_file: Path, model: Path, *sets: str) -> tuple[Recipe, Plan]:
    """`recipe_file` with `model.path` set to `model` and `sets` applied, and its plan."""
    recipe = load_recipe(recipe_file, [f"model.path='{model}'", *sets])
    return recipe, make_plan(recipe, recipe_file=str(recipe_file), backend=BackendKind.LOCAL,
                             gpus_here=0)


def quickstart_plan(*sets: str) -> tuple[Recipe, Plan]:
    """recipes/quickstart.toml with `sets` applied, and its plan."""
    recipe = load_recipe(QUICKSTART, list(sets))
    return recipe, make_plan(recipe, recipe_file=str(QUICKSTART), backend=BackendKind.LOCAL,
                             gpus_here=0)
