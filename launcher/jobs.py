"""`sft-launch status | logs | cancel` and Slurm submission, for one run folder.

A run folder says which backend ran it (plan.json); Slurm runs also hold job.json (see
launcher.backends.slurm). Progress always comes from logs/events.jsonl, written by rank 0.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.markup import escape

from launcher.backends import slurm
from launcher.errors import UsageError
from launcher.plan.plan import Plan
from launcher.progress import console, read_events, report_end
from launcher.render.run_folder import RunFolder

NODE_LABEL = re.compile(r"^\s*(\d+): ")  # srun --label: "<task id>: ", one task per node
CANCEL_WAIT_S = 30.0


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


def launch_slurm(folder: RunFolder, *, resume: bool, wait: bool, quiet: bool) -> None:
    """Submit the job; with `wait`, follow it to its end and fail unless it completed."""
    job_id = slurm.submit(folder, resume=resume)
    where = escape(str(folder.path))
    console.print(f"submitted Slurm job [bold]{job_id}[/bold]; output in "
                  f"{where}/logs/slurm-{job_id}.out")
    console.print(f"follow it: sft-launch status {where}   |   sft-launch logs {where} --follow")
    console.print(f"stop it:   sft-launch cancel {where}")
    if not wait:
        return
    try:
        code = slurm.wait(folder, quiet=quiet)
    except KeyboardInterrupt:
        console.print(f"stopped following; job {job_id} keeps running: sft-launch status {where}")
        raise SystemExit(130) from None
    failure = None
    if code != 0 or not folder.summary.exists():
        info = slurm.state(job_id)
        failure = (f"job {job_id} ended {info.state} (exit code {info.exit_code or '?'})"
                   f"{'' if folder.summary.exists() else ', no summary.json'}")
    report_end(folder, _slurm_log(folder, job_id), failure)


def status(folder: RunFolder) -> list[tuple[str, str]]:
    """(label, value) rows: where, state, elapsed, nodes, progress and metrics."""
    plan = Plan.from_json(folder.plan.read_text())
    events = list(read_events(folder.events))
    summary = json.loads(folder.summary.read_text()) if folder.summary.exists() else None
    rows = [("run", str(folder.path))]
    layout = f"{plan.nodes} node(s) x {plan.procs_per_node} process(es)"
    if plan.backend == "slurm":
        rows += _slurm_rows(folder, layout)
    else:
        rows += [("backend", "local"),
                 ("state", "COMPLETED" if summary else
                  "INCOMPLETE (no summary.json: running or stopped; see logs/launch.log)"),
                 ("elapsed", _elapsed(events, summary)), ("nodes", f"this machine, {layout}")]
    rows += _progress_rows(events)
    if summary:
        rows.append(("summary", str(folder.summary)))
    return rows


def logs(folder: RunFolder, *, follow: bool, node: int | None) -> None:
    """Print the run's output (one node's lines with `node`); `follow` until the run ends."""
    plan = Plan.from_json(folder.plan.read_text())
    if node is not None and not 0 <= node < plan.nodes:
        raise UsageError(f"--node {node}: the run has nodes 0..{plan.nodes - 1}")
    if plan.backend == "slurm":
        job_id = _job_id(folder)
        if job_id is None:
            raise UsageError(f"{folder.path} was never submitted: no Slurm output yet")
        path = _slurm_log(folder, job_id)
        running = slurm.Poller(job_id).active
    else:
        path = folder.logs / "launch.log"

        def running() -> bool:
            return not folder.summary.exists()

    select = _node_filter(node if plan.backend == "slurm" else None)
    if not follow and not path.exists():
        console.print(f"no output yet ({path} does not exist)", markup=False)
        return
    try:
        for line in _tail(path, running if follow else lambda: False):
            if (shown := select(line)) is not None:
                sys.stdout.write(shown)
                sys.stdout.flush()
    except KeyboardInterrupt:
        return


def cancel(folder: RunFolder) -> str:
    """scancel the run's job and wait until Slurm reports it ended; returns the final state."""
    plan = Plan.from_json(folder.plan.read_text())
    if plan.backend != "slurm":
        raise UsageError(f"{folder.path} is a local run: stop it with Ctrl-C where it runs")
    job_id = _job_id(folder)
    if job_id is None:
        raise UsageError(f"{folder.path} was never submitted: nothing to cancel")
    info = slurm.state(job_id)
    if not info.active:
        raise UsageError(f"job {job_id} already ended ({info.state}): nothing to cancel")
    slurm.cancel(job_id)
    deadline = time.monotonic() + CANCEL_WAIT_S
    while info.active and time.monotonic() < deadline:
        time.sleep(0.5)
        info = slurm.state(job_id)
    return info.state


def _slurm_rows(folder: RunFolder, layout: str) -> list[tuple[str, str]]:
    job_id = _job_id(folder)
    if job_id is None:
        error = "; ".join(str(slurm.read_job(folder).get("error", "")).splitlines())
        hint = f"cd {shlex.quote(str(folder.path))} && sbatch job.sbatch"
        why = f": {error}" if error else f" (dry run): {hint}"
        return [("backend", "slurm"), ("state", f"NOT SUBMITTED{why}")]
    info = slurm.state(job_id)
    shown = info.state + (f" ({info.reason})" if info.state == "PENDING" and info.reason else "")
    if info.exit_code and not info.active:
        shown += f", exit code {info.exit_code}"
    return [("backend", f"slurm, job {job_id}"), ("state", shown),
            ("elapsed", info.elapsed or "-"),
            ("nodes", f"{info.nodes or '-'} ({layout})")]


def _progress_rows(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    starts = [e for e in events if e["event"] == "start"]
    trains = [e for e in events if e["event"] == "train"]
    evals = [e for e in events if e["event"] == "eval"]
    rows = []
    if starts:
        total = starts[-1]["total_steps"]
        if trains:
            last = trains[-1]
            rows.append(("step", f"{last['step']}/{total}, loss {last['loss']:.4f}"))
        else:
            rows.append(("step", f"{starts[-1].get('step', 0)}/{total}"))
    if evals:
        shown = "  ".join(f"{k} {v:.4f}" for k, v in evals[-1]["metrics"].items())
        rows.append(("eval", f"step {evals[-1]['step']}: {shown}"))
    return rows


def _elapsed(events: list[dict[str, Any]], summary: dict[str, Any] | None) -> str:
    if summary and "wall_time_s" in summary:
        seconds = float(summary["wall_time_s"])
    elif events:
        seconds = events[-1]["time"] - events[0]["time"]
    else:
        return "-"
    return time.strftime("%H:%M:%S", time.gmtime(seconds))


def _job_id(folder: RunFolder) -> str | None:
    """The newest job of the folder: job.json's, or a later one submitted by hand (its
    logs/slurm-<id>.out)."""
    record = slurm.read_job(folder)
    found = [int(record["job_id"])] if record.get("submitted") else []
    found += [int(m.group(1)) for p in folder.logs.glob("slurm-*.out")
              if (m := re.fullmatch(r"slurm-(\d+)\.out", p.name))]
    return str(max(found)) if found else None


def _slurm_log(folder: RunFolder, job_id: str) -> Path:
    return folder.logs / f"slurm-{job_id}.out"


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
