"""docs/recipe-reference.md is the schema rendered: regenerated whenever a field changes."""

from __future__ import annotations

import re
import typing
from typing import Any

from pydantic import BaseModel

from launcher.recipe.reference import REGENERATE, render_reference
from launcher.recipe.schema import Recipe
from tests.conftest import REPO

REFERENCE = REPO / "docs" / "recipe-reference.md"
STALE = f"docs/recipe-reference.md is out of date with the schema: run `{REGENERATE}`"


def sections(model: type[BaseModel] = Recipe, prefix: str = "") -> dict[str, set[str]]:
    """Each recipe table's heading -> its keys, walked from the schema independently."""
    found: dict[str, set[str]] = {prefix: set()}
    for name, info in model.model_fields.items():
        members: tuple[Any, ...] = (info.annotation, *typing.get_args(info.annotation))
        subs = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        if subs:
            found |= sections(subs[0], f"{prefix}.{name}" if prefix else name)
        else:
            found[prefix].add(name)
    return found


def documented() -> dict[str, set[str]]:
    """The reference file's headings -> the keys of the rows under each."""
    found: dict[str, set[str]] = {}
    current = None
    for line in REFERENCE.read_text().splitlines():
        if heading := re.fullmatch(r"## \[([a-z_.]+)\]", line):
            current = found.setdefault(heading[1], set())
        elif line == "## Top-level keys":
            current = found.setdefault("", set())
        elif current is not None and (key := re.match(r"\| `([a-z_]+)` \|", line)):
            current.add(key[1])
    return found


def test_the_reference_file_is_the_rendered_schema() -> None:
    assert REFERENCE.exists(), f"docs/recipe-reference.md is missing: run `{REGENERATE}`"
    assert REFERENCE.read_text() == render_reference(), STALE


def test_the_reference_lists_every_field_of_every_section() -> None:
    expected, found = sections(), documented()
    assert {"", "model", "model.lora", "task", "data", "train", "distributed", "tracking",
            "slurm"} <= set(expected)
    missing = {f"{table}.{key}".lstrip(".") for table, keys in expected.items()
               for key in keys - found.get(table, set())}
    assert not missing, f"{STALE} (missing: {sorted(missing)})"
    unknown = {f"{table}.{key}".lstrip(".") for table, keys in found.items()
               for key in keys - expected.get(table, set())}
    assert not unknown, f"{STALE} (no longer in the schema: {sorted(unknown)})"
