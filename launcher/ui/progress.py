"""Follow a run from its event log (written by rank 0): progress bar, then the summary table."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from launcher.contract.errors import LaunchError
from launcher.contract.events import (
    CheckpointFailed,
    Evaluated,
    Event,
    Generated,
    Hung,
    Message,
    Preprocessing,
    Started,
    Stopped,
    TrackingOffline,
    TrainLogged,
    WorkersDied,
    read_events,
)
from launcher.contract.plan import Plan
from launcher.contract.reports import RankReport, Summary
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import WORKER_ERROR
from launcher.planner.sizes import format_bytes

# Not a terminal (logs, CI, pipes): wide enough that tables are not cut.
console = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 120)


def follow(folder: RunFolder, *, is_running: Callable[[], bool], quiet: bool = False,
           poll_s: float = 0.5) -> None:
    """Show a progress bar over optimizer steps until `is_running()` turns false."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[metrics]}"), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=quiet, transient=False) as bar:
        task = bar.add_task("starting", total=None, metrics="")
        seen = 0
        while True:
            running = is_running()
            events = list(read_events(folder.events))
            for event in events[seen:]:
                _apply(bar, task, event)
            seen = len(events)
            if not running:
                return
            time.sleep(poll_s)


def metrics_text(metrics: dict[str, float]) -> str:
    return "  ".join(f"{name} {value:.4f}" for name, value in metrics.items())


def _apply(bar: Progress, task: Any, event: Event) -> None:
    match event:
        case Preprocessing():
            bar.update(task, description=f"tokenizing {event.what}", total=event.total,
                       completed=event.done)
        case Started():
            bar.update(task, description="training", total=event.total_steps,
                       completed=event.step)
        case TrainLogged():
            bar.update(task, completed=event.step,
                       metrics=f"loss {event.loss:.4f}  lr {event.lr:.2e}")
        case Evaluated():
            bar.console.print(f"step {event.step}: eval {metrics_text(event.metrics)}")
        case Message():
            bar.console.print(event.text)
        case Generated():  # model text: brackets are not rich markup
            bar.console.print(escape(event.describe()))
        case TrackingOffline() | Hung() | WorkersDied() | CheckpointFailed():
            bar.console.print(event.describe())
        case Stopped():
            bar.console.print(event.describe())


def summary_table(summary: Summary, memory: str | None = None) -> Table:
    """The end-of-run table: final eval and train metrics, steps, tokens, time, and the peak
    memory of a rank (`memory`, measured against the plan)."""
    table = Table(title="sft-launch: final metrics", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows: list[tuple[str, Any]] = [(f"eval {name}", value) for name, value in summary.eval.items()]
    rows += [("train loss", summary.train_loss), ("steps", summary.steps),
             ("epochs", summary.epochs), ("samples", summary.samples),
             ("tokens", summary.tokens), ("token efficiency", summary.token_efficiency),
             ("samples/s", summary.train_samples_per_s),
             ("time to first step s", summary.time_to_first_step_s),
             ("wall time s", summary.wall_time_s), ("world size", summary.world_size),
             ("strategy", summary.strategy or "one process"),
             ("peak memory/rank", memory)]
    for name, value in rows:
        shown = "-" if value is None else f"{value:.4f}" if isinstance(value, float) else value
        table.add_row(name, str(shown))
    return table


def peak_memory(folder: RunFolder) -> str | None:
    """The highest peak of any rank (GPU memory where there is one, else host memory), and the
    plan's prediction for the strategy that ran: `3.2 GiB (plan 3.0 GiB)`."""
    reports = [RankReport.read(path) for path in folder.rank_reports()]
    peaks = [r.peak_device_bytes or r.peak_rss_bytes for r in reports]
    if not peaks or None in peaks:
        return None
    plan = Plan.read(folder.plan)
    predicted = (plan.memory.estimate_for(plan.strategy, plan.offload).peak_bytes
                 if plan.memory is not None and plan.active_strategy is not None else 0)
    shown = format_bytes(max(peaks))
    return f"{shown} (plan {format_bytes(predicted)})" if predicted else shown


def report_end(folder: RunFolder, log: Path, failure: str | None) -> None:
    """The summary table; on failure a LaunchError with the reason a worker gave, else the
    log's tail; on success where things are."""
    summary = Summary.read_if_exists(folder.summary)
    if summary is not None:
        console.print(summary_table(summary, peak_memory(folder)))
    if failure is not None:
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        refused = [line.split(WORKER_ERROR, 1)[1] for line in lines if WORKER_ERROR in line]
        if refused:  # a worker said why (bad data, a model it cannot load): that, not the dump
            raise LaunchError(f"{refused[0]}\n({failure}; full log: {log})")
        console.print("\n".join(lines[-25:]), markup=False, highlight=False)
        raise LaunchError(f"{failure}; full log: {log}")
    console.print(f"done: model in {escape(str(folder.final))}, "
                  f"summary in {escape(str(folder.summary))}"
                  + (f", curves in {escape(str(folder.report))}" if folder.report.exists()
                     else ""))
