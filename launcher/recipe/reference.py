"""The recipe reference (docs/recipe-reference.md), rendered from the live schema's fields."""

from __future__ import annotations

import json
import sys
import types
import typing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from launcher.recipe.schema import Recipe

TARGET = Path(__file__).resolve().parents[2] / "docs" / "recipe-reference.md"
REGENERATE = "python -m launcher.recipe.reference"
TOP_LEVEL = "Top-level keys"
# Constraint attributes of pydantic's field metadata, as a reader writes them.
BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="),
          ("min_length", "length >="), ("max_length", "length <="))

HEADER = f"""# Recipe reference

Generated from `launcher/recipe/schema.py`; do not edit by hand. Regenerate it after changing
the schema with:

```bash
{REGENERATE}
```

(`tests/unit/test_recipe_reference.py` fails while this file and the schema disagree.)

A recipe is one TOML file: the top-level keys below, then one table per section. Any key can be
overridden on the command line with `--set SECTION.KEY=VALUE` (the value is TOML), e.g.
`--set train.lr=2e-5`. `sft-launch schema` prints the same schema as JSON Schema, for editor
completion. Unknown keys are refused. "required" marks a key without a default.
"""


@dataclass(frozen=True)
class Table:
    """One recipe table: its dotted name (`model.lora`; "" for the top level), model, required."""

    name: str
    model: type[BaseModel]
    required: bool


def union_members(annotation: Any) -> tuple[Any, ...]:
    """The members of a union annotation (`X | None`, `Union[...]`), or the annotation alone."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return (annotation,)


def section_model(annotation: Any) -> type[BaseModel] | None:
    """The section model a field holds (a model, or a model or None), else None."""
    for member in union_members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def tables(model: type[BaseModel] = Recipe, prefix: str = "",
           required: bool = True) -> list[Table]:
    """Every table of the recipe, depth first in declaration order, the top level first."""
    found = [Table(prefix, model, required)]
    for name, info in model.model_fields.items():
        sub = section_model(info.annotation)
        if sub is not None:
            dotted = f"{prefix}.{name}" if prefix else name
            found.extend(tables(sub, dotted, info.is_required()))
    return found


def keys(table: Table) -> dict[str, FieldInfo]:
    """The keys of a table that hold values (the sections under it have their own table)."""
    return {name: info for name, info in table.model.model_fields.items()
            if section_model(info.annotation) is None}


def type_text(annotation: Any) -> str:
    """A field's type as a reader writes it: allowed values quoted, `None` left out."""
    members = union_members(annotation)
    if len(members) > 1:
        return " | ".join(type_text(m) for m in members if m is not type(None))
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(json.dumps(value) for value in typing.get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " | ".join(json.dumps(member.value) for member in annotation)
    if origin in (list, dict):
        args = ", ".join(type_text(arg) for arg in typing.get_args(annotation))
        return f"{'list' if origin is list else 'table'}[{args}]"
    return getattr(annotation, "__name__", str(annotation))


def toml_value(value: Any) -> str:
    """A default value as it would be written in TOML (`None` is a key left unset)."""
    if value is None:
        return "unset"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def default_text(info: FieldInfo) -> str:
    """The default of a field as a code span, or "required" (no default), or "unset"."""
    if info.is_required():
        return "required"
    factory = info.default_factory
    value = factory() if factory is not None else info.default  # type: ignore[call-arg]
    return "unset" if value is None else code(toml_value(value))


def constraints(info: FieldInfo) -> str:
    """The bounds and pattern pydantic checks on a field, as sentences: "Must be `> 0`."."""
    bounds, patterns = [], []
    for meta in info.metadata:
        bounds += [code(f"{symbol} {getattr(meta, attr)}") for attr, symbol in BOUNDS
                   if getattr(meta, attr, None) is not None]
        if getattr(meta, "pattern", None) is not None:
            patterns.append(code(meta.pattern))
    found = [f"Must be {', '.join(bounds)}." if bounds else "",
             f"Must match {' and '.join(patterns)}." if patterns else ""]
    return " ".join(text for text in found if text)


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell: pipes escaped, one line."""
    return " ".join(text.replace("|", "\\|").split())


def prose(text: str) -> str:
    """Text for a table cell: `<R>` outside code spans shown as written, not taken for HTML."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return cell("`".join(parts))


def code(text: str) -> str:
    """Text as an inline code span, in a table cell."""
    return cell(f"`{text}`")


def row(name: str, info: FieldInfo) -> str:
    """One key's table row: key, type, default, description (then its constraints)."""
    notes = [prose(info.description or ""), constraints(info)]
    description = " ".join(note for note in notes if note)
    return (f"| {code(name)} | {code(type_text(info.annotation))} | {default_text(info)} | "
            f"{description} |")


def docstring(model: type[BaseModel]) -> str:
    """A section class's own docstring (not one inherited from its base), on one line."""
    text = model.__dict__.get("__doc__") or ""
    return " ".join(text.split())


def heading(table: Table) -> str:
    """A table's Markdown heading: `## [train]`, or the top-level keys' own title."""
    return f"## [{table.name}]" if table.name else f"## {TOP_LEVEL}"


def render_table(table: Table) -> str:
    """One section of the reference: heading, whether it is required, its docstring, its keys."""
    lines = [heading(table), ""]
    about = docstring(table.model)
    if table.name:
        need = "Required table." if table.required else "Optional table."
        lines += [f"{need} {about}".strip(), ""]
    elif about:
        lines += [about, ""]
    lines += ["| key | type | default | description |", "|---|---|---|---|"]
    lines += [row(name, info) for name, info in keys(table).items()]
    subs = [t.name for t in tables() if t.name.rpartition(".")[0] == table.name and t.name]
    if subs:
        lines += ["", "Tables: " + ", ".join(f"`[{name}]`" for name in subs) + "."]
    return "\n".join(lines) + "\n"


def render_reference() -> str:
    """The whole recipe reference, in Markdown."""
    return "\n".join([HEADER, *(render_table(table) for table in tables())])


def main(argv: list[str]) -> int:
    """Write the reference to docs/recipe-reference.md (or to the path given)."""
    target = Path(argv[0]) if argv else TARGET
    target.write_text(render_reference())
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
