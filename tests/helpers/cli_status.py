"""`sft-launch status` output, parsed: one attribute per row it prints."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Shown:
    """The rows of `sft-launch status` ("label: value" lines); a row not printed is ""."""

    run: str = ""
    backend: str = ""
    state: str = ""
    elapsed: str = ""
    nodes: str = ""
    step: str = ""
    eval: str = ""
    summary: str = ""

    @classmethod
    def parse(cls, stdout: str) -> Shown:
        labels = {f.name for f in dataclasses.fields(cls)}
        rows = (line.partition(":") for line in stdout.splitlines())
        return cls(**{label.strip(): value.strip() for label, _, value in rows
                      if label.strip() in labels})
