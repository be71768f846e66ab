"""The event log (`logs/events.jsonl`, written by rank 0): one typed event per line.

The CLI's progress bar, `status` and the benchmarks read it through `read_events`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from launcher.contract.records import ContractError, JsonRecord
from launcher.contract.reports import Summary


def _now() -> float:
    return round(time.time(), 3)


@dataclass(frozen=True, kw_only=True)
class Event(JsonRecord):
    """One line of the event log; `kind` is its "event" field."""

    kind: ClassVar[str]
    time: float = field(default_factory=_now)

    def to_line(self) -> str:
        return json.dumps({"event": self.kind, **self.to_dict()}) + "\n"


@dataclass(frozen=True, kw_only=True)
class Preprocessing(Event):
    """Rank 0 tokenized `done` of `total` rows of the `what` split."""

    kind: ClassVar[str] = "preprocess"
    what: str
    done: int
    total: int


@dataclass(frozen=True, kw_only=True)
class Started(Event):
    """Training starts (or resumes) at `step` of `total_steps`."""

    kind: ClassVar[str] = "start"
    step: int
    total_steps: int
    steps_per_epoch: int
    world_size: int


@dataclass(frozen=True, kw_only=True)
class TrainLogged(Event):
    """Train metrics after optimizer step `step` (the loss averaged since the last log)."""

    kind: ClassVar[str] = "train"
    step: int
    loss: float
    lr: float
    grad_norm: float
    epoch: float


@dataclass(frozen=True, kw_only=True)
class Evaluated(Event):
    kind: ClassVar[str] = "eval"
    step: int
    metrics: dict[str, float]


@dataclass(frozen=True, kw_only=True)
class Checkpointed(Event):
    """A complete checkpoint of step `step` is on disk."""

    kind: ClassVar[str] = "checkpoint"
    step: int


@dataclass(frozen=True, kw_only=True)
class Message(Event):
    """A line for the user (printed by the CLI)."""

    kind: ClassVar[str] = "message"
    text: str


@dataclass(frozen=True, kw_only=True)
class Ended(Event):
    """The run completed; `summary` is what summary.json holds."""

    kind: ClassVar[str] = "end"
    summary: Summary


EVENT_KINDS: dict[str, type[Event]] = {
    cls.kind: cls for cls in (Preprocessing, Started, TrainLogged, Evaluated, Checkpointed,
                              Message, Ended)
}


def parse_event(line: str, source: str = "events.jsonl") -> Event:
    try:
        data = json.loads(line)
        kind = data.pop("event")
    except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
        raise ContractError(f"{source}: not an event: {line[:80]!r}") from None
    cls = EVENT_KINDS.get(kind)
    if cls is None:
        raise ContractError(f"{source}: unknown event kind {kind!r}")
    return cls.from_dict(data, source)


def read_events(path: Path) -> Iterator[Event]:
    """All complete events written so far (a half-written last line is left for later)."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.endswith("\n"):
                yield parse_event(line, str(path))


class EventLog:
    """Appends events, one JSON object per line; a no-op unless `enabled` (rank 0)."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled

    def write(self, event: Event) -> None:
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(event.to_line())

    def message(self, text: str) -> None:
        self.write(Message(text=text))
