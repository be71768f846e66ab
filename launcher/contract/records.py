"""JSON records both sides read and write: one `to_json`/`from_json` for every dataclass.

Records are plain dataclasses; pydantic checks the types when a file is read, so a file that is
not what its reader expects is one clear `ContractError`, never a KeyError deep in a reader.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any, Self

from pydantic import TypeAdapter, ValidationError

from launcher.contract.errors import LaunchError


class ContractError(LaunchError):
    """A run-folder file that does not hold what its reader expects."""


@cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


class JsonRecord:
    """Mixin for dataclasses that cross between the control plane and the workers."""

    def to_dict(self) -> dict[str, Any]:
        return _adapter(type(self)).dump_python(self, mode="json")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_line(self) -> str:
        """One compact line, for JSON-lines files."""
        return json.dumps(self.to_dict(), separators=(",", ":")) + "\n"

    @classmethod
    def read_lines(cls, path: Path) -> list[Self]:
        """Every complete line of a JSON-lines file of this record (none if it is absent)."""
        if not path.is_file():
            return []
        with path.open(encoding="utf-8") as handle:
            return [cls.from_json(line, str(path)) for line in handle if line.endswith("\n")]

    @classmethod
    def from_dict(cls, data: Any, source: str = "") -> Self:
        try:
            return _adapter(cls).validate_python(data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top)"
            raise ContractError(f"{source or cls.__name__}: {where}: {first['msg']} "
                                f"(not a valid {cls.__name__})") from None

    @classmethod
    def from_json(cls, text: str, source: str = "") -> Self:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ContractError(f"{source or cls.__name__}: not valid JSON ({err})") from None
        return cls.from_dict(data, source)

    @classmethod
    def read(cls, path: Path) -> Self:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ContractError(f"cannot read {path}: {err.strerror or err}") from None
        return cls.from_json(text, str(path))

    @classmethod
    def read_if_exists(cls, path: Path) -> Self | None:
        return cls.read(path) if path.is_file() else None

    def write(self, path: Path) -> None:
        """Write atomically: readers see the old file or the new one, never half of one."""
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(self.to_json(), encoding="utf-8")
        tmp.replace(path)
