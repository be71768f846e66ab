"""Where a recipe's model is: a Hub id to its snapshot in the Hugging Face cache, `package:<module>`
to the folder its get_model_path() names, a local folder as it is."""

from __future__ import annotations

import importlib
from pathlib import Path

from launcher.contract.errors import RecipeError
from launcher.planner.hub import hub_snapshot, is_hub_id


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
