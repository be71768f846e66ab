"""Read a run folder in tests, through the contract's types only."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from launcher.contract.events import Event, read_events
from launcher.contract.job import JobRecord
from launcher.contract.plan import Plan
from launcher.contract.reports import RankReport, Summary
from launcher.contract.run_folder import RunFolder

E = TypeVar("E", bound=Event)


def events(run_dir: Path) -> list[Event]:
    return list(read_events(RunFolder(run_dir).events))


def of_kind(found: list[Event], kind: type[E]) -> list[E]:
    return [event for event in found if isinstance(event, kind)]


def rank_reports(run_dir: Path) -> list[RankReport]:
    return [RankReport.read(path) for path in RunFolder(run_dir).rank_reports()]


def summary(run_dir: Path) -> Summary:
    return Summary.read(RunFolder(run_dir).summary)


def plan(run_dir: Path) -> Plan:
    return Plan.read(RunFolder(run_dir).plan)


def job(run_dir: Path) -> JobRecord:
    return JobRecord.read(RunFolder(run_dir).job)
