"""Runs a node's workers and restarts them when one dies, without a person.

`python -m launcher.worker.supervisor RUN_DIR [--resume] [-- ACCELERATE_ARGS...]`: one per node,
started by launch.sh and job.sbatch.

An attempt is `accelerate launch ACCELERATE_ARGS -m launcher.worker RUN_DIR [--resume]`, run in
this process so that a failure comes back as torch elastic's record of which rank ended how
(one plain worker process when there are no ACCELERATE_ARGS). Workers that stopped on request
(a checkpoint, exit 75), refused the launch or their input end the supervisor with their code.
Any other death (a signal, a crash) is logged (`WorkersDied`: the rank, host and cause) and the
workers restart from the newest complete checkpoint, up to `train.max_restarts` times and only
while restarts make progress (a newer checkpoint than at the previous restart); node 0 keeps
the restarts, or why it gave up, in job.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from launcher.contract.checkpoints import newest_step
from launcher.contract.events import EventLog, Stopped, WorkersDied, read_events
from launcher.contract.job import (
    VICTIM_SIGNAL,
    AttemptVerdict,
    FinalState,
    JobRecord,
    Restart,
    WorkerDeath,
    first_death,
    utc_now,
)
from launcher.contract.plan import Plan
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import BackendKind, ExitCode
from launcher.worker.exiting import exit_now

# Worker exit codes that end the job as they are: asked to stop, a refused launch or input, a
# hang that the watchdog already diagnosed, a checkpoint that found no room.
FINAL_CODES = frozenset({ExitCode.STOPPED, ExitCode.REFUSED, ExitCode.USAGE, ExitCode.HUNG,
                         ExitCode.NOT_SAVED})
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
# A worker killed by a stop signal got it before installing its handler or while Python was
# shutting down: a stop was asked for, nothing crashed.
STOP_SIGNAL_NAMES = frozenset({"SIGUSR1", "SIGINT"})
REPORT_WAIT_S = 30.0  # node 0 waits this long for the other nodes' reports of an attempt
VERDICT_WAIT_S = 15.0  # and the others as long again, and this, for node 0's verdict


@dataclass(frozen=True)
class Attempt:
    """How one attempt ended: its exit code, and the workers that died (none when it
    completed or stopped as asked)."""

    code: int
    deaths: tuple[WorkerDeath, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """Whether to restart after an attempt's deaths, and if not, why and as what."""

    restart: bool
    reason: str = ""
    final_state: FinalState | None = None


def verdict(restarts: int, max_restarts: int, step: int, step_at_restart: int | None) -> Verdict:
    """Restart while `restarts` < `max_restarts` and the last restart (if any) was followed by
    a newer checkpoint (`step`) than the one it resumed from (`step_at_restart`)."""
    if restarts >= max_restarts:
        return Verdict(False, f"train.max_restarts = {max_restarts} reached",
                       FinalState.RESTART_LIMIT)
    if step_at_restart is not None and step <= step_at_restart:
        return Verdict(False, f"no newer checkpoint since the last restart (step "
                       f"{step_at_restart}): the same failure would come back",
                       FinalState.NO_PROGRESS)
    return Verdict(True)


class Supervisor:
    """Runs attempts on one node until one ends without a death to restart from."""

    def __init__(self, folder: RunFolder, accelerate_args: Sequence[str], max_restarts: int,
                 node: int, nodes: int) -> None:
        self.folder, self.accelerate_args = folder, list(accelerate_args)
        self.max_restarts, self.node, self.nodes = max_restarts, node, nodes
        self.events = EventLog(folder.events, True)
        self.host = socket.gethostname()

    def run(self, resume: bool) -> int:
        restarts, step_at_restart = 0, None
        while True:
            started = time.time()
            attempt = self.attempt(restarts, resume or restarts > 0)
            if not attempt.deaths:
                return attempt.code
            if self.folder.summary.exists():  # a worker died on its way out: the run is done
                return ExitCode.OK
            step = newest_step(self.folder.checkpoints)  # the same on every node
            decided = verdict(restarts, self.max_restarts, step, step_at_restart)
            self.events.write(WorkersDied(node=self.node, attempt=restarts,
                                          deaths=attempt.deaths, restart=decided.restart,
                                          checkpoint_step=step, reason=decided.reason))
            if self.node == 0:
                deaths = self.every_nodes_deaths(restarts, started)
                print(f"sft-launch supervisor: {first_death(deaths).describe()}", flush=True)
                followed = self.decide(restarts, step, deaths, decided, attempt.code)
            else:
                followed = self.node_0s_verdict(restarts)
            if followed is not None and not followed.restart:
                return followed.code
            if followed is None and not decided.restart:
                return attempt.code
            restarts, step_at_restart = restarts + 1, step

    def every_nodes_deaths(self, attempt: int, since: float) -> tuple[WorkerDeath, ...]:
        """The deaths every node's supervisor reported for `attempt` (begun at `since`),
        waiting up to REPORT_WAIT_S for the other nodes: the first death may be elsewhere."""
        deadline = time.monotonic() + REPORT_WAIT_S
        while True:
            reported = [e for e in read_events(self.folder.events) if isinstance(e, WorkersDied)
                        and e.attempt == attempt and e.time >= since]
            if len({e.node for e in reported}) >= self.nodes or time.monotonic() > deadline:
                return tuple(death for e in reported for death in e.deaths)
            time.sleep(0.5)

    def attempt(self, restarts: int, resume: bool) -> Attempt:
        worker = ["-m", "launcher.worker", str(self.folder.path), *(["--resume"] * resume)]
        if not self.accelerate_args:
            return self._one_process(worker)
        from accelerate.commands.launch import launch_command, launch_command_parser
        from torch.distributed.elastic.multiprocessing.api import SignalException
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

        options = _own_port(self.accelerate_args, restarts)
        args = launch_command_parser().parse_args([*options, *worker])
        try:
            launch_command(args)
        except ChildFailedError as err:  # torch elastic's agent (several processes)
            deaths = tuple(self._death(rank, f.pid, f.exitcode, float(f.timestamp))
                           for rank, f in sorted(err.failures.items()))
        except subprocess.CalledProcessError as err:  # accelerate's one-process launcher
            deaths = (self._death(0, 0, err.returncode, time.time()),)
        except SignalException as err:  # the agent was asked to stop and stopped the workers
            events = list(read_events(self.folder.events))
            stopped = bool(events) and isinstance(events[-1], Stopped)
            return Attempt(ExitCode.STOPPED if stopped else 128 + int(err.sigval))
        else:
            return Attempt(ExitCode.OK)
        return _settled(deaths)

    def _one_process(self, worker: list[str]) -> Attempt:
        """The worker as a child; a stop signal to this process is passed on to it."""
        proc = subprocess.Popen([sys.executable, *worker])
        previous = {signum: signal.signal(signum, lambda s, _f: proc.send_signal(s))
                    for signum in FORWARDED}
        try:
            code = proc.wait()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if code == 0:
            return Attempt(ExitCode.OK)
        return _settled((self._death(0, proc.pid, code, time.time()),))

    def _death(self, rank: int, pid: int, returncode: int, when: float) -> WorkerDeath:
        """A worker's end as torch elastic and subprocess report it (a signal: negative)."""
        name = signal.Signals(-returncode).name if returncode < 0 else None
        return WorkerDeath(rank=rank, host=self.host, pid=pid,
                           exit_code=128 - returncode if returncode < 0 else returncode,
                           signal=name, time=when)

    def decide(self, restarts: int, step: int, deaths: tuple[WorkerDeath, ...],
               decided: Verdict, code: int) -> AttemptVerdict:
        """Node 0: the verdict every node follows (logs/attempts/), and job.json's record of
        it. A node whose workers died first a second time in a job of several nodes on Slurm
        is left behind: the job is submitted again without it (`launcher.backends.bad_nodes`)
        instead of restarting here."""
        record = JobRecord.of_job(self.folder.job, BackendKind.SLURM
                                  if "SLURM_JOB_ID" in os.environ else BackendKind.LOCAL)
        host = first_death(deaths).host
        if (self.nodes > 1 and "SLURM_JOB_ID" in os.environ
                and host in {r.cause.host for r in record.restarts}):
            said = AttemptVerdict(attempt=restarts, restart=False, code=ExitCode.NODE_FAILED,
                                  exclude=host, reason=f"the workers of {host} died first a "
                                  "second time: the job goes on without it")
        else:
            said = AttemptVerdict(attempt=restarts, restart=decided.restart, code=code,
                                  reason=decided.reason)
        path = self.folder.attempt_verdict(restarts)
        path.parent.mkdir(parents=True, exist_ok=True)
        said.write(path)
        if said.exclude is None:
            self.record(record, restarts, step, deaths, decided)
        return said

    def node_0s_verdict(self, restarts: int) -> AttemptVerdict | None:
        """Node 0's verdict on attempt `restarts`, once written (None: none came in time, and
        this node follows its own, the same but for a node left behind)."""
        path = self.folder.attempt_verdict(restarts)
        deadline = time.monotonic() + REPORT_WAIT_S + VERDICT_WAIT_S
        while time.monotonic() < deadline:
            if path.exists():
                return AttemptVerdict.read(path)
            time.sleep(0.5)
        return None

    def record(self, record: JobRecord, restarts: int, step: int,
               deaths: tuple[WorkerDeath, ...], decided: Verdict) -> None:
        """job.json: one more restart, or the final state and why (node 0 only)."""
        folder = self.folder
        cause = first_death(deaths)
        if decided.restart:
            restart = Restart(attempt=restarts + 1, time=utc_now(), checkpoint_step=step,
                              cause=cause)
            record = dataclasses.replace(record, restarts=(*record.restarts, restart))
        else:
            record = dataclasses.replace(record, final_state=decided.final_state,
                                         final_reason=f"{cause.describe()}; {decided.reason}")
        record.write(folder.job)


def _own_port(options: list[str], restarts: int) -> list[str]:
    """Each restart rendezvouses at a port of its own (the first's + `restarts`): a node that
    restarts first never meets the store of an attempt that has not ended everywhere."""
    if not restarts or "--main_process_port" not in options:
        return options
    at = options.index("--main_process_port") + 1
    return [*options[:at], str(int(options[at]) + restarts), *options[at + 1:]]


def _settled(deaths: tuple[WorkerDeath, ...]) -> Attempt:
    """An attempt whose workers ended: passed on as it is when its code says so (a stop, a
    refusal, a hang, no room), else with the deaths to restart after."""
    code = _attempt_code(deaths)
    return Attempt(code, () if code in FINAL_CODES else deaths)


def _attempt_code(deaths: tuple[WorkerDeath, ...]) -> int:
    """The exit code an attempt's end is passed on with. Workers the launcher terminated once
    another had ended (SIGTERM) say nothing; of the others: a hang's code, or a code they all
    agree on that ends the job as it is (a stop, also when its signal killed the worker; a
    refusal; no room for a checkpoint), or the first death's such code when every other came
    after it (the launcher killed the rest: a rank waiting in a collective does not stop on
    TERM); else the code of the first death among the crashes (a crash during a stop is a
    crash)."""
    telling = tuple(d for d in deaths if d.signal != VICTIM_SIGNAL) or deaths
    codes = {ExitCode.STOPPED if death.signal in STOP_SIGNAL_NAMES else death.exit_code
             for death in telling}
    if ExitCode.HUNG in codes:
        return ExitCode.HUNG
    if len(codes) == 1 and codes <= FINAL_CODES:
        return codes.pop()
    first = first_death(telling)
    if first.signal is None and first.exit_code in FINAL_CODES and all(
            d.time > first.time for d in telling if d is not first):
        return first.exit_code  # the others were taken down after it (SIGKILL: no stop in time)
    crashes = tuple(d for d in telling if d.exit_code not in FINAL_CODES) or telling
    return first_death(crashes).exit_code or ExitCode.FAILED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher.worker.supervisor",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="the run folder written by sft-launch")
    parser.add_argument("--resume", action="store_true",
                        help="the first attempt continues from the newest complete checkpoint")
    parser.epilog = "After --: the options of `accelerate launch` (none: one plain process)."
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    args, accelerate_args = parser.parse_args(argv[:split]), argv[split + 1:]
    folder = RunFolder(args.run_dir.resolve())
    from launcher.recipe.load import load_recipe

    recipe, plan = load_recipe(folder.recipe), Plan.read(folder.plan)
    node = int(os.environ.get("SLURM_NODEID", "0"))
    return Supervisor(folder, accelerate_args, recipe.train.max_restarts, node,
                      plan.nodes).run(args.resume)


if __name__ == "__main__":
    exit_now(main())
