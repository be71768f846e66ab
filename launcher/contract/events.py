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

from launcher.contract.job import WorkerDeath, first_death
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
    tokens_per_s: float | None = None  # real tokens, all ranks, in this step
    data_wait_share: float | None = None  # rank 0: the share of the logged steps' time spent
    # waiting for their data (decoded ahead in DataLoader workers for files)


@dataclass(frozen=True, kw_only=True)
class Evaluated(Event):
    kind: ClassVar[str] = "eval"
    step: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class Generation:
    """One generation: the prompt as the model saw it (template and all), what it
    generated greedily, and the answer the data gives (None for a prompt of the recipe's)."""

    prompt: str
    completion: str
    reference: str | None = None


@dataclass(frozen=True, kw_only=True)
class Generated(Event):
    """`train.generation_prompts` generated at the evaluation of step `step`."""

    kind: ClassVar[str] = "generations"
    step: int
    generations: tuple[Generation, ...]

    def describe(self, width: int = 160) -> str:
        """The generations, one line each, the prompt's end and the completion (newlines shown)."""
        lines = [f"step {self.step}: generations"]
        for generation in self.generations:
            prompt = generation.prompt[-width // 2:].replace("\n", "\\n")
            completion = generation.completion[:width].replace("\n", "\\n")
            lines.append(f"  ...{prompt} -> {completion!r}")
        return "\n".join(lines)


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


@dataclass(frozen=True, kw_only=True)
class Stopped(Event):
    """The ranks agreed to stop on `signal` after optimizer step `step`; `checkpoint` (relative
    to the run folder) is complete, or None when no step had run yet."""

    kind: ClassVar[str] = "stopped"
    step: int
    signal: str
    checkpoint: str | None

    def describe(self) -> str:
        if self.checkpoint is None:
            return (f"stopped on {self.signal} before the first step of this launch "
                    "(nothing to save)")
        return (f"stopped on {self.signal} after step {self.step}, with a complete checkpoint: "
                f"{self.checkpoint}")


@dataclass(frozen=True, kw_only=True)
class CheckpointFailed(Event):
    """The checkpoint of `step` could not be written (`reason`) and was removed; `newest` is
    the newest complete checkpoint (relative to the run folder; None: there is none). The
    ranks stopped."""

    kind: ClassVar[str] = "checkpoint_failed"
    step: int
    reason: str
    newest: str | None

    def describe(self) -> str:
        kept = (f"{self.newest} is the newest complete checkpoint" if self.newest
                else "there is no complete checkpoint yet")
        return (f"the checkpoint of step {self.step} could not be written ({self.reason}): "
                f"removed, and training stopped; {kept}: make room, then --resume")


@dataclass(frozen=True)
class StalledRank:
    """A rank that made no progress: where it was, and whether its process still responds."""

    rank: int
    host: str
    pid: int
    phase: str
    step: int
    silent_s: float
    responding: bool

    def describe(self) -> str:
        how = "still responds (stuck)" if self.responding else "does not respond"
        return (f"rank {self.rank} (host {self.host}, pid {self.pid}) made no progress for "
                f"{self.silent_s:.0f} s in {self.phase} (step {self.step}) and {how}")


@dataclass(frozen=True, kw_only=True)
class Hung(Event):
    """A watchdog stopped the job: `stalled` made no progress for longer than allowed."""

    kind: ClassVar[str] = "hang"
    timeout_s: float
    stalled: tuple[StalledRank, ...]
    stacks: str  # where the live ranks' Python stacks are, relative to the run folder

    def describe(self) -> str:
        return ("; ".join(rank.describe() for rank in self.stalled)
                + f" (train.hang_timeout_s = {self.timeout_s:.0f}): stopping every rank; "
                f"Python stacks of the live ranks in {self.stacks}")


@dataclass(frozen=True, kw_only=True)
class TrackingOffline(Event):
    """A tracker's service could not be used: the run logs locally, to be uploaded later."""

    kind: ClassVar[str] = "tracking_offline"
    reason: str
    sync_command: str
    tracker: str = "W&B"

    def describe(self) -> str:
        return (f"{self.tracker}: {self.reason}; logging locally, upload later with "
                f"`{self.sync_command}`")


@dataclass(frozen=True, kw_only=True)
class WorkersDied(Event):
    """Workers of node `node` died in attempt `attempt` (0: the launch itself); `restart`: the
    supervisor restarts them from the checkpoint of `checkpoint_step`, else `reason` why not."""

    kind: ClassVar[str] = "died"
    node: int
    attempt: int
    deaths: tuple[WorkerDeath, ...]
    restart: bool
    checkpoint_step: int
    reason: str = ""

    def describe(self) -> str:
        first = first_death(self.deaths)
        others = len(self.deaths) - 1
        said = first.describe() + (f" ({others} other worker(s) of node {self.node} ended "
                                   "with it)" if others else "")
        if self.restart:
            return (f"{said}: restart {self.attempt + 1} from "
                    + (f"the checkpoint of step {self.checkpoint_step}" if self.checkpoint_step
                       else "step 0 (no checkpoint yet)"))
        return f"{said}: not restarted, {self.reason}"


EVENT_KINDS: dict[str, type[Event]] = {
    cls.kind: cls for cls in (Preprocessing, Started, TrainLogged, Evaluated, Generated,
                              Checkpointed, Message, Ended, Stopped, Hung, TrackingOffline,
                              WorkersDied, CheckpointFailed)
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
