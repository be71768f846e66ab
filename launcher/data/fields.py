"""Typed access to a raw record's fields through a recipe's column mapping, and the error of a
row that does not fit its format (`RowError`; `launcher.data.formats` adds the file and line)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from launcher.data.files import describe


class RowError(ValueError):
    """A row that does not fit its format; `load_rows` adds the file and line."""


class Fields:
    """Typed access to a raw record's fields, through the column mapping."""

    def __init__(self, data: dict[str, Any], columns: Mapping[str, str], labelled: bool,
                 folder: Path) -> None:
        self.data = data
        self.columns = columns
        self.labelled = labelled
        self.folder = folder  # of the file the record came from: relative paths start there

    def label_fields(self, *names: str) -> tuple[str, ...]:
        """The label fields `names`: required of labelled rows only."""
        return names if self.labelled else ()

    def column(self, name: str) -> str:
        return self.columns.get(name, name)

    def require(self, *names: str) -> None:
        """Fail with the list of required columns when any of them is missing or null."""
        if any(self.data.get(self.column(name)) is None for name in names):
            wanted = " and ".join(f'"{self.column(name)}"' for name in names)
            raise RowError(f"expected an object with {wanted}, got {describe(self.data)}")

    def get(self, name: str) -> Any:
        return self.data.get(self.column(name))

    def text(self, name: str) -> str | None:
        """A string field; None when absent or null."""
        value = self.get(name)
        if value is not None and not isinstance(value, str):
            raise RowError(f'"{self.column(name)}" must be a string, got {describe(value)}')
        return value

    def items(self, name: str) -> list[Any]:
        value = self.get(name)
        if not isinstance(value, list) or not value:
            raise RowError(f'"{self.column(name)}" must be a non-empty list, got {describe(value)}')
        return value
