"""Follow a run from its event log (written by rank 0): progress bar, then the summary table."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from launcher.errors import LaunchError
from launcher.render.run_folder import RunFolder

# Not a terminal (logs, CI, pipes): wide enough that tables are not cut.
console = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 120)


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    """All complete events written so far (a half-written last line is left for later)."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.endswith("\n"):
                yield json.loads(line)


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


def _apply(bar: Progress, task: Any, event: dict[str, Any]) -> None:
    kind = event.get("event")
    if kind == "preprocess":
        bar.update(task, description=f"tokenizing {event['what']}", total=event["total"],
                   completed=event["done"])
    elif kind == "start":
        bar.update(task, description="training", total=event["total_steps"],
                   completed=event.get("step", 0))
    elif kind == "train":
        bar.update(task, completed=event["step"],
                   metrics=f"loss {event['loss']:.4f}  lr {event['lr']:.2e}")
    elif kind == "eval":
        shown = "  ".join(f"{k} {v:.4f}" for k, v in event["metrics"].items())
        bar.console.print(f"step {event['step']}: eval {shown}")
    elif kind == "message":
        bar.console.print(event["text"])


def summary_table(summary: dict[str, Any]) -> Table:
    """The end-of-run table: final train and eval metrics, steps, tokens, time."""
    table = Table(title="sft-launch: final metrics", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if isinstance(value, dict):
            continue
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table


def report_end(folder: RunFolder, log: Path, failure: str | None) -> None:
    """The summary table; on failure the log's tail and a LaunchError, else where things are."""
    if folder.summary.exists():
        console.print(summary_table(json.loads(folder.summary.read_text())))
    if failure is not None:
        tail = log.read_text(errors="replace").splitlines()[-25:] if log.exists() else []
        console.print("\n".join(tail), markup=False, highlight=False)
        raise LaunchError(f"{failure}; full log: {log}")
    console.print(f"done: model in {escape(str(folder.final))}, "
                  f"summary in {escape(str(folder.summary))}")
