"""Label names <-> ids for classification and token classification."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class LabelMap:
    """Label names by id. Built from the training rows, then reused for eval rows.

    Labels that are all non-negative integers (ints, or strings of digits as read from CSV/TSV)
    keep their value as id: names are "0".."max". Any other labels are names, sorted, numbered
    from 0.
    """

    names: tuple[str, ...]

    @classmethod
    def build(cls, values: Iterable[str | int]) -> LabelMap:
        """The map for the labels in `values` (each label counted once)."""
        names = {str(value).strip() for value in values}
        if not names:
            raise ValueError("no labels to build a label map from")
        if all(name.isdecimal() for name in names):
            return cls(tuple(str(i) for i in range(max(int(name) for name in names) + 1)))
        return cls(tuple(sorted(names)))

    @cached_property
    def label2id(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.names)}

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    def __len__(self) -> int:
        return len(self.names)

    def id_of(self, value: str | int) -> int:
        """The id of a label; `KeyError` naming the known labels when it is not one of them."""
        name = str(value).strip()
        try:
            return self.label2id[name]
        except KeyError:
            raise KeyError(f"label {name!r} is not one of the labels {list(self.names)}") from None
