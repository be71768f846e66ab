"""Errors about data files, naming the file and the line (or row) at fault."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BadRowPolicy = Literal["error", "skip"]


@dataclass(frozen=True)
class Origin:
    """Where a record came from: a 1-based line of a text file, a 0-based row of a table, or a
    whole file (an image of an image folder)."""

    path: str
    line: int
    unit: Literal["line", "row", "file"] = "line"

    def __str__(self) -> str:
        if self.unit == "file":
            return self.path
        where = self.line if self.unit == "line" else f"row {self.line}"
        return f"{self.path}:{where}"


class DataError(ValueError):
    """A malformed record: bad syntax, wrong column count, missing field or wrong type."""

    def __init__(self, origin: Origin, reason: str) -> None:
        super().__init__(f"{origin}: {reason}")
        self.origin = origin
        self.reason = reason

    @property
    def path(self) -> str:
        return self.origin.path

    @property
    def line(self) -> int:
        return self.origin.line


def handle_bad_row(error: DataError, policy: BadRowPolicy, skipped: list[DataError]) -> None:
    """Raise `error` under the "error" policy; record it in `skipped` under "skip"."""
    if policy == "error":
        raise error
    skipped.append(error)
