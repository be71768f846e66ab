"""Read a recipe: TOML -> `extends` chain -> `--set` overrides -> validated `Recipe`.

Every problem becomes a `RecipeError` that names the file that set the key, the dotted key,
what was expected and, where possible, a fix ("did you mean ...").
"""

from __future__ import annotations

import datetime
import difflib
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from launcher.contract.errors import RecipeError
from launcher.data.hub_data import HubData, is_hub_data
from launcher.recipe.schema import Recipe

Origins = dict[str, str]  # dotted key -> the file (or "--set") that gave its value


def load_recipe(path: Path, overrides: list[str] | None = None) -> Recipe:
    """Load, merge and validate a recipe; relative paths in it resolve against its folder."""
    path = Path(path)
    data, origins = _read_chain(path, [])
    for item in overrides or []:
        key, value = _parse_override(item)
        _set_dotted(data, key, value, str(path))
        origins[key] = f"--set {key}"
    data.pop("extends", None)
    recipe = _validate(data, origins, path)
    _resolve_paths(recipe, path.parent)
    return recipe


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RecipeError(str(path), "", "recipe file not found", "check the path")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise RecipeError(str(path), "", f"not valid TOML ({err})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(str(path), "", f"cannot read the file ({err})") from None


def _read_chain(path: Path, seen: list[Path]) -> tuple[dict[str, Any], Origins]:
    """Read `path` and everything it extends; later files override earlier ones."""
    resolved = path.resolve()
    if resolved in seen:
        chain = " -> ".join(str(p) for p in [*seen, resolved])
        raise RecipeError(str(seen[-1]), "extends", f"cycle in extends: {chain}",
                          "remove one of the extends lines")
    data = _read_toml(path)
    own = _origins(data, str(path))
    parent_name = data.get("extends")
    if parent_name is None:
        return data, own
    if not isinstance(parent_name, str):
        raise RecipeError(str(path), "extends", "expected a file name (string)")
    parent_path = path.parent / parent_name
    if not parent_path.is_file():
        raise RecipeError(str(path), "extends", f"{parent_name!r} not found next to the recipe",
                          f"expected {parent_path}")
    base, origins = _read_chain(parent_path, [*seen, resolved])
    _deep_merge(base, data)
    origins.update(own)
    return base, origins


def _origins(data: dict[str, Any], file: str, prefix: str = "") -> Origins:
    out: Origins = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        out[dotted] = file
        if isinstance(value, dict):
            out.update(_origins(value, file, dotted + "."))
    return out


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> None:
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value


def _parse_override(item: str) -> tuple[str, Any]:
    """`train.lr=2e-5` -> ("train.lr", 2e-05); values are TOML, bare words and times (a Slurm
    `01:00:00`) are strings."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError("--set", item, "expected KEY=VALUE, e.g. --set train.lr=2e-5")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    if isinstance(value, datetime.date | datetime.time):
        value = raw.strip()  # 01:00:00 is a Slurm time limit here, not a TOML time of day
    return key, value


def _set_dotted(data: dict[str, Any], key: str, value: Any, file: str) -> None:
    node = data
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecipeError(file, ".".join(parts[: i + 1]), "is a value, not a section",
                              f"cannot set {key}")
        node = child
    node[parts[-1]] = value


def _validate(data: dict[str, Any], origins: Origins, path: Path) -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        errors = err.errors()
        loc = _field_loc(errors[0]["loc"])
        key = ".".join(loc)
        file = _origin_of(loc, origins, str(path))
        if errors[0]["type"] == "extra_forbidden":
            raise RecipeError(file, key, "unknown key", _did_you_mean(loc)) from None
        if errors[0]["type"] == "missing":
            raise RecipeError(file, key, "required key is missing",
                              f"add it to the [{'.'.join(loc[:-1]) or 'top'}] section") from None
        # A union (e.g. a strategy or "auto") reports one error per member: say them all.
        same = [e for e in errors if _field_loc(e["loc"]) == loc]
        message = ", or ".join(dict.fromkeys(e["msg"].removeprefix("Value error, ")
                                             for e in same))
        got = errors[0].get("input")
        if isinstance(got, str):  # a URL's password is never echoed
            got = re.sub(r"//([^/:@\s]*):[^/@\s]*@", r"//\1:***@", got)
        shown = f" (got {got!r})" if not isinstance(got, dict) else ""
        raise RecipeError(file, key, f"{message}{shown}", _expected(loc)) from None


def _field_loc(loc: tuple[int | str, ...]) -> list[str]:
    """The dotted key of an error: field names and list indices, without pydantic's union
    member tags (``str-enum[Strategy]``, ``literal['auto']``)."""
    return [str(part) for part in loc
            if isinstance(part, int) or not any(c in part for c in "[]-'")]


def _origin_of(loc: list[str], origins: Origins, default: str) -> str:
    for n in range(len(loc), 0, -1):
        hit = origins.get(".".join(loc[:n]))
        if hit:
            return hit
    return default


def _section_model(loc: list[str]) -> type[BaseModel] | None:
    """The pydantic model that holds the last key of `loc`."""
    model: type[BaseModel] = Recipe
    for part in loc[:-1]:
        field = model.model_fields.get(part)
        if field is None:
            return None
        inner = _model_in(field.annotation)
        if inner is None:
            return None
        model = inner
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _did_you_mean(loc: list[str]) -> str:
    model = _section_model(loc)
    if model is None:
        return ""
    known = list(model.model_fields)
    close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}known keys here: {', '.join(known)}"


def _expected(loc: list[str]) -> str:
    if not loc:  # a check across keys (the recipe's own validator): the message names them
        return ""
    model = _section_model(loc)
    field = model.model_fields.get(loc[-1]) if model else None
    if field is None or (isinstance(field.annotation, type)
                         and issubclass(field.annotation, BaseModel)):
        return ""  # a check across a section's keys: its message names them
    return f"expected {_type_name(field.annotation)}" + (
        f" ({field.description})" if field.description else ""
    )


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "")


def _resolve_paths(recipe: Recipe, folder: Path) -> None:
    """Data files, local `hf:` dataset folders and local model folders are relative to the
    recipe's own folder; Hub ids stay as they are."""
    recipe.data.train = [_resolve_data(folder, p, "train") for p in recipe.data.train]
    recipe.data.eval = [_resolve_data(folder, p, "eval") for p in recipe.data.eval]
    for attr in ("path", "tokenizer"):
        value = getattr(recipe.model, attr)
        if value and _is_local(folder, value):
            setattr(recipe.model, attr, _resolve(folder, value))


def _resolve_data(folder: Path, value: str, role: str) -> str:
    if not is_hub_data(value):
        return _resolve(folder, value)
    try:
        source = HubData.parse(value, role)
    except ValueError:
        return value  # check_inputs names the key and the expected form
    if _is_local(folder, source.name):
        return source.with_name(_resolve(folder, source.name))
    return str(source)


def _is_local(folder: Path, value: str) -> bool:
    return value.startswith((".", "/", "~")) or (folder / value).exists()


def _resolve(folder: Path, value: str) -> str:
    return str((folder / Path(value).expanduser()).resolve())
