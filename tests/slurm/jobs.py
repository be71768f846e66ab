"""What the Slurm tests share: a user's `sft-launch` run against the test cluster, and reading
its job back."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

from launcher.contract.run_folder import RunFolder
from tests.conftest import REPO, SFT_LAUNCH
from tests.helpers.cli_status import Shown
from tests.helpers.run_folder import job, rank_reports, summary

QUICKSTART = REPO / "recipes" / "quickstart.toml"
# All test nodes share this machine's 2 cores: one CPU for each node's task.
SHORT = ["--set", "data.max_train_samples=192", "--set", "data.max_eval_samples=64",
         "--set", "train.log_every=1", "--set", 'slurm.time="00:10:00"',
         "--set", "slurm.cpus_per_task=1", "--quiet"]
TWO_NODES = ["--nodes", "2", "--procs-per-node", "1"]
# For tests of something else: the preflight (~9 s of each multi-node job here) is tested in
# test_preflight_on_slurm.py and stays on, as by default, in the launch and lost-node tests.
NO_PREFLIGHT = ["--set", "slurm.preflight=false"]
# For tests of something else than tracking: W&B's start costs node 0 ~5 s of its one CPU.
NO_TRACKING = ["--set", "tracking.mode=disabled"]
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
# Shell that must never run: no whitespace, quotes or '#', so a run folder may be named so.
HOSTILE = "$(touch${IFS}pwned-a);`touch${IFS}pwned-b`&&touch${IFS}pwned-c"


def sft(env: dict[str, str], *args: Any, timeout: float = 600,
        text: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([*SFT_LAUNCH, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=text, timeout=timeout)


def sft_popen(env: dict[str, str], *args: Any) -> subprocess.Popen:
    return subprocess.Popen([*SFT_LAUNCH, *map(str, args)], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def status(env: dict[str, str], run_dir: Path) -> Shown:
    """`sft-launch status RUN_DIR`, row by row."""
    out = sft(env, "status", run_dir, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return Shown.parse(out.stdout)


def wait_for(check: Any, timeout: float, what: str, poll_s: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def ended(env: dict[str, str], run_dir: Path, timeout: float = 600) -> str:
    """The job's final state as `status` shows it, once it has one."""
    return wait_for(lambda: (s := status(env, run_dir).state).split()[0] in (
        "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") and s, timeout, "the job to end", 2)


def signal_batch(slurm_cluster: dict[str, str], run_dir: Path, name: str) -> None:
    """What Slurm does `signal_grace_s` before the time limit (`--signal=B:USR1@...`)."""
    subprocess.run(["scancel", f"--signal={name}", "--batch", str(job(run_dir).job_id)],
                   env=slurm_cluster, check=True, timeout=30)


def job_log(run_dir: Path) -> str:
    job_id = job(run_dir).job_id
    assert job_id is not None, f"{run_dir}: job.json holds no Slurm job id"
    return RunFolder(run_dir).slurm_log(job_id).read_text()


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout + result.stderr


def assert_completed_run(run_dir: Path, world: int, launches: int = 1) -> None:
    """One rank per node, one process group, identical final weights, one W&B run (an offline
    run folder per launch of the job)."""
    reports = rank_reports(run_dir)
    assert [r.rank for r in reports] == list(range(world))
    assert [r.node_rank for r in reports] == list(range(world))
    assert {r.world_size for r in reports} == {world}
    assert {r.group_size for r in reports} == {world}
    hosts = [r.hostname for r in reports]
    assert len(set(hosts)) == world and all(re.fullmatch(r"n\d+", h) for h in hosts), hosts
    if {r.strategy for r in reports} == {"ddp"}:  # ranks on other nodes: no shared memory
        assert {r.gradient_sync for r in reports} == {"process-group"}
    assert len({r.final_weights_sha256 for r in reports}) == 1, "ranks ended different"
    done = summary(run_dir)
    assert done.status == "completed" and done.world_size == world
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == launches
    assert job(run_dir).submitted is True
    assert not (REPO / ".deepspeed_env").exists() and not (run_dir / ".deepspeed_env").exists()
