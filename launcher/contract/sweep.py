"""A sweep folder: `sweep.json` (`SweepRecord`), one run folder per point, the job array's
script and record (`job.json`, written by its backend), and the leaderboard
(`leaderboard.json`, `best.toml`, `sweep.png`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from launcher.contract.records import JsonRecord
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import BackendKind, JobState


@dataclass(frozen=True)
class SweepPoint:
    """One run of the sweep: its settings (`--set` values) and its run folder's name."""

    index: int
    settings: dict[str, str]
    run: str


@dataclass(frozen=True)
class SweepRecord(JsonRecord):
    """What was swept, over which points, and where they run (the job array itself:
    `SweepFolder.job`)."""

    name: str
    recipe_file: str
    base_settings: tuple[str, ...]  # the --set options every point shares
    grid: dict[str, tuple[str, ...]]
    points: tuple[SweepPoint, ...]
    backend: BackendKind
    max_parallel: int


@dataclass(frozen=True)
class Entry:
    """One point on the leaderboard."""

    point: SweepPoint
    state: JobState
    value: float | None
    steps: int | None
    wall_time_s: float | None


@dataclass(frozen=True)
class Leaderboard(JsonRecord):
    """`leaderboard.json`: the points, best first, by `metric`."""

    metric: str
    lower_is_better: bool
    entries: tuple[Entry, ...]


@dataclass(frozen=True)
class SweepFolder:
    """Paths of a sweep folder's files."""

    path: Path

    @property
    def record(self) -> Path:
        return self.path / "sweep.json"

    @property
    def job_script(self) -> Path:
        return self.path / "sweep.sbatch"

    @property
    def job(self) -> Path:
        """job.json: the backend's record of the job array (`JobRecord`)."""
        return self.path / "job.json"

    @property
    def log(self) -> Path:
        """Output of the process that runs a local sweep's points one after another."""
        return self.path / "sweep.log"

    def runs(self, points: tuple[SweepPoint, ...]) -> list[RunFolder]:
        """The points' run folders, in their order (task N of the array job is point N)."""
        return [self.point(point) for point in points]

    def point(self, point: SweepPoint) -> RunFolder:
        return RunFolder(self.path / point.run)

    @property
    def best(self) -> Path:
        """The resolved recipe of the leaderboard's winner."""
        return self.path / "best.toml"

    @property
    def picture(self) -> Path:
        return self.path / "sweep.png"

    @property
    def leaderboard(self) -> Path:
        return self.path / "leaderboard.json"
