"""A run's name: the recipe's `name`, else its file's stem made safe for folders and jobs."""

from __future__ import annotations

import re
from pathlib import Path

from launcher.recipe.schema import Recipe


def recipe_name(recipe: Recipe, recipe_file: str | Path) -> str:
    """The run's name: the recipe's `name`, else its file's stem made safe."""
    return recipe.name or safe_name(Path(recipe_file).stem)


def safe_name(text: str) -> str:
    """A run name from a file name: letters, digits, '.', '_' and '-' only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "run"
