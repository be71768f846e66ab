"""A run folder's job, whatever backend runs it: launch and follow, status, logs, cancel."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.markup import escape

from launcher.backends import backend_for
from launcher.backends.base import Backend, JobStatus
from launcher.contract.errors import UsageError
from launcher.contract.events import (
    CheckpointFailed,
    Evaluated,
    Hung,
    Started,
    Stopped,
    TrainLogged,
    read_events,
)
from launcher.contract.plan import Plan
from launcher.contract.reports import Summary
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import ExitCode, JobState
from launcher.ui.progress import console, metrics_text, report_end
from launcher.ui.waiting import Every, follow_job, stopping_job, wait_until_ended

NODE_LABEL = re.compile(r"^\s*(\d+): ")  # srun --label: "<task id>: ", one task per node
CANCEL_WAIT_S = 120.0  # how long `cancel` waits for the job to end


def find_run(run_dir: Path | None, runs: Path = Path("runs")) -> RunFolder:
    """RUN_DIR, or the newest run folder under runs/; it must hold a plan.json."""
    if run_dir is None:
        found = [p for p in runs.glob("*") if (p / "plan.json").is_file()] if runs.is_dir() else []
        if not found:
            raise UsageError(f"no run folders under {runs}/: pass RUN_DIR")
        run_dir = max(found, key=lambda p: p.stat().st_mtime)
    folder = RunFolder(run_dir)
    if not folder.plan.is_file():
        raise UsageError(f"{run_dir} is not a run folder (no plan.json)")
    return folder


def backend_of(folder: RunFolder) -> Backend:
    return backend_for(Plan.read(folder.plan).backend)


def launch(folder: RunFolder, backend: Backend, *, resume: bool, wait: bool,
           quiet: bool) -> None:
    """Submit the run folder; follow it to its end (always when the job belongs to this process,
    as a local run does) and report.

    Such a run stopped by a signal (Ctrl-C, SIGTERM, `sft-launch cancel`) checkpoints and exits
    130 with the command that continues it."""
    before = len(list(read_events(folder.events)))
    job = backend.submit(folder, resume=resume)
    where = escape(str(folder.path))
    log = backend.logs(folder).path
    detached = not backend.attached
    if detached:
        console.print(f"submitted {job}; output in {escape(str(log))}")
        console.print(f"follow it: sft-launch status {where}   |   "
                      f"sft-launch logs {where} --follow")
        console.print(f"stop it:   sft-launch cancel {where}")
        if not wait:
            return
    try:
        with stopping_job(folder, backend):
            final = follow_job(folder, backend, quiet=quiet)
    except KeyboardInterrupt:
        console.print(f"stopped following; {job} keeps running: sft-launch status {where}")
        raise SystemExit(ExitCode.INTERRUPTED) from None
    new = list(read_events(folder.events))[before:]
    stopped = [e for e in new if isinstance(e, Stopped)]
    if stopped and not folder.summary.exists() and not detached:
        plan = Plan.read(folder.plan)
        console.print(f"{stopped[-1].describe()}; continue with:\n  sft-launch "
                      f"{escape(plan.recipe_file)} --run-dir {where} --resume  "
                      "(and the same --set options)")
        raise SystemExit(ExitCode.INTERRUPTED)
    failure = None
    if final.state is not JobState.COMPLETED or not folder.summary.exists():
        told = [e for e in new if isinstance(e, Hung | CheckpointFailed)]
        failure = told[-1].describe() if told else final.ended() + (
            "" if folder.summary.exists() else ", no summary.json")
    report_end(folder, log, failure)


def status(folder: RunFolder) -> list[tuple[str, str]]:
    """(label, value) rows: where, state, elapsed, nodes, progress and metrics."""
    plan = Plan.read(folder.plan)
    job = backend_for(plan.backend).status(folder)
    summary = Summary.read_if_exists(folder.summary)
    rows = [("run", str(folder.path)), ("backend", f"{plan.backend}, {job.job}"),
            ("state", job.shown())]
    if job.elapsed:
        rows.append(("elapsed", job.elapsed))
    rows.append(("nodes", job.nodes or f"{plan.nodes} node(s) x {plan.procs_per_node} "
                 "process(es)"))
    rows += _progress_rows(folder)
    if summary:
        rows.append(("summary", str(folder.summary)))
    return rows


def _progress_rows(folder: RunFolder) -> list[tuple[str, str]]:
    start = train = evaluated = None
    for event in read_events(folder.events):
        match event:
            case Started():
                start = event
            case TrainLogged():
                train = event
            case Evaluated():
                evaluated = event
    rows = []
    if start is not None:
        if train is not None and train.time >= start.time:
            rows.append(("step", f"{train.step}/{start.total_steps}, loss {train.loss:.4f}"))
        else:
            rows.append(("step", f"{start.step}/{start.total_steps}"))
    if evaluated is not None:
        rows.append(("eval", f"step {evaluated.step}: {metrics_text(evaluated.metrics)}"))
    return rows


def logs(folder: RunFolder, *, follow: bool, node: int | None) -> None:
    """Print the run's output (one node's lines with `node`); `follow` until the run ends."""
    plan = Plan.read(folder.plan)
    if node is not None and not 0 <= node < plan.nodes:
        raise UsageError(f"--node {node}: the run has nodes 0..{plan.nodes - 1}")
    backend = backend_for(plan.backend)
    source = backend.logs(folder)
    select = _node_filter(node if source.labelled else None)
    if not follow and not source.path.exists():
        console.print(f"no output yet ({source.path} does not exist)", markup=False)
        return
    poller = Every(2.0, lambda: backend.status(folder).active)
    try:
        for line in _tail(source.path, poller if follow else lambda: False):
            if (shown := select(line)) is not None:
                sys.stdout.write(shown)
                sys.stdout.flush()
    except KeyboardInterrupt:
        return


def cancel(folder: RunFolder) -> JobStatus:
    """Ask the run's job to end (its workers checkpoint first); its status once it ended."""
    backend = backend_of(folder)
    backend.cancel(folder)
    return wait_until_ended(folder, backend, CANCEL_WAIT_S)


def _node_filter(node: int | None) -> Callable[[str], str | None]:
    """All lines, or node `node`'s lines without their "<node>: " label."""
    if node is None:
        return lambda line: line

    def select(line: str) -> str | None:
        match = NODE_LABEL.match(line)
        return line[match.end():] if match and int(match.group(1)) == node else None

    return select


def _tail(path: Path, running: Callable[[], bool], poll_s: float = 0.5) -> Iterator[str]:
    """Complete lines of `path`, then new ones while `running()`; the rest when it stops."""
    position, partial = 0, b""
    while True:
        active = running()
        if path.exists():
            with path.open("rb") as handle:
                handle.seek(position)
                chunk = handle.read()
                position = handle.tell()
            *lines, partial = (partial + chunk).split(b"\n")
            yield from (line.decode(errors="replace") + "\n" for line in lines)
        if not active:
            if partial:
                yield partial.decode(errors="replace") + "\n"
            return
        time.sleep(poll_s)
