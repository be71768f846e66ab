"""Slurm's own commands (`scontrol`, `sacct`, `scancel`), each failure one clear error, and its
job states in the project's words (`STATES`)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from launcher.contract.errors import LaunchError
from launcher.contract.vocabulary import JobState

# Slurm's job states in the project's words; a state not listed here may still run.
STATES = {
    **dict.fromkeys(("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
                     "SUSPENDED"), JobState.PENDING),
    **dict.fromkeys(("RUNNING", "CONFIGURING", "COMPLETING", "SIGNALING", "STAGE_OUT",
                     "RESIZING", "STOPPED"), JobState.RUNNING),
    "COMPLETED": JobState.COMPLETED,
    "CANCELLED": JobState.CANCELLED,
    **dict.fromkeys(("TIMEOUT", "DEADLINE"), JobState.TIMEOUT),
    **dict.fromkeys(("FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "PREEMPTED",
                     "SPECIAL_EXIT", "REVOKED"), JobState.FAILED),
    "UNKNOWN": JobState.UNKNOWN,  # Slurm does not know the job (any more)
}
COMMAND_TIMEOUT_S = 60


class SlurmCommandError(LaunchError):
    """A Slurm command failed; `detail` is its own message."""

    def __init__(self, command: str, detail: str) -> None:
        self.detail = detail
        super().__init__(f"`{command}` failed: {detail}")


@dataclass(frozen=True)
class JobInfo:
    """What Slurm says about one job."""

    job_id: str
    state: str  # e.g. PENDING, RUNNING, COMPLETED, FAILED, CANCELLED; UNKNOWN if not found
    exit_code: str = ""  # "rc:signal"
    elapsed: str = ""
    nodes: str = ""
    reason: str = ""

    @property
    def job_state(self) -> JobState:
        """The state in the project's words (Slurm's own word: `state`)."""
        return STATES.get(self.state, JobState.RUNNING)

    @property
    def known(self) -> bool:
        """Slurm (its controller or its accounting) knows the job."""
        return self.state != "UNKNOWN"


def state(job_id: str) -> JobInfo:
    """The job's state: `scontrol` while Slurm remembers it, then accounting (`sacct`, `-c`)."""
    info = _from_scontrol(job_id)
    if info is None:
        info = _from_sacct(job_id, ["-X"]) or _from_sacct(job_id, ["-c"])
    return info or JobInfo(job_id, "UNKNOWN")


def scancel(job_id: str, *flags: str) -> None:
    run(["scancel", *flags, job_id])


def array_states(array_id: str) -> list[JobInfo]:
    """Every task of a job array that the controller still knows (none once it forgot them)."""
    try:
        out = run(["scontrol", "show", "job", "-o", array_id]).stdout
    except SlurmCommandError:
        return []
    return [info for line in out.splitlines() if (info := _info(array_id, line)) is not None]


def _from_scontrol(job_id: str) -> JobInfo | None:
    try:
        out = run(["scontrol", "show", "job", "-o", job_id]).stdout
    except SlurmCommandError:
        return None  # "Invalid job id specified": finished longer ago than MinJobAge
    return _info(job_id, out)


def _info(job_id: str, line: str) -> JobInfo | None:
    fields = _fields(line)
    if "JobState" not in fields:
        return None
    return JobInfo(job_id, fields["JobState"], fields.get("ExitCode", ""),
                   fields.get("RunTime", ""), _nodes(fields.get("NodeList", "")),
                   fields.get("Reason", ""))


def _from_sacct(job_id: str, flags: list[str]) -> JobInfo | None:
    try:
        out = run(["sacct", *flags, "-j", job_id, "-n", "-P",
                    "-o", "JobID,State,ExitCode,Elapsed,NodeList"]).stdout
    except SlurmCommandError:
        return None  # accounting disabled, or no jobcomp file
    rows = [line.split("|") for line in out.splitlines() if line.startswith(f"{job_id}|")]
    if not rows:
        return None
    _, job_state, exit_code, elapsed, nodes = (rows[-1] + [""] * 5)[:5]
    # sacct says "CANCELLED by 0": keep the state word only
    return JobInfo(job_id, job_state.split()[0] if job_state else "UNKNOWN", exit_code, elapsed,
                   _nodes(nodes))


def _fields(line: str) -> dict[str, str]:
    """`scontrol -o` output: Key=Value tokens; the first occurrence of a key wins."""
    fields: dict[str, str] = {}
    for match in re.finditer(r"(?:^|\s)([A-Za-z/:_]+)=(\S*)", line):
        fields.setdefault(match.group(1), match.group(2))
    return fields


def _nodes(value: str) -> str:
    return "" if value in ("(null)", "None assigned") else value


def request_vs_limits(job_id: str) -> str:
    job = _fields(run(["scontrol", "show", "job", "-o", job_id]).stdout)
    partition = job.get("Partition", "?")
    low, _, high = job.get("NumNodes", "?").partition("-")  # "8-8" = exactly 8
    nodes = low if high in ("", low) else f"{low}-{high}"
    asked = f"requested {nodes} node(s) for {job.get('TimeLimit', '?')} in partition {partition}"
    try:
        part = _fields(run(["scontrol", "show", "partition", "-o", partition]).stdout)
    except SlurmCommandError:
        return asked
    return (f"{asked}, which has MaxTime={part.get('MaxTime', '?')}, "
            f"MaxNodes={part.get('MaxNodes', '?')}, TotalNodes={part.get('TotalNodes', '?')}")


def run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a Slurm command; its own message becomes the LaunchError on failure."""
    try:
        out = subprocess.run(args, cwd=cwd, capture_output=True, text=True,
                             timeout=COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise LaunchError(f"`{args[0]}` not found: is Slurm installed on this machine?") from None
    except subprocess.TimeoutExpired:
        raise LaunchError(f"`{' '.join(args)}` did not answer in {COMMAND_TIMEOUT_S} s: "
                          "is the Slurm controller up?") from None
    if out.returncode != 0:
        lines = [line.strip().removeprefix(f"{args[0]}: error: ")
                 for line in (out.stderr + out.stdout).splitlines() if line.strip()]
        raise SlurmCommandError(" ".join(args), "; ".join(lines) or f"exit code {out.returncode}")
    return out




def hostnames(nodelist: str) -> tuple[str, ...]:
    """A Slurm node list ("n[1-3]") as host names."""
    return tuple(run(["scontrol", "show", "hostnames", nodelist]).stdout.split())


def node_said(node: str) -> str:
    """What Slurm says of a node: its state and reason ("DOWN+NOT_RESPONDING: Not
    responding"); "unknown to Slurm" when it cannot say."""
    try:
        line = run(["scontrol", "show", "node", node, "--oneliner"]).stdout
    except LaunchError:
        return "unknown to Slurm"
    reason = re.search(r"\bReason=(.*?)(?: \[[^]]*\])?(?= [A-Za-z]+=|$)", line.strip())
    return ": ".join(filter(None, [_fields(line).get("State", "?"),
                                   reason.group(1) if reason else ""]))
