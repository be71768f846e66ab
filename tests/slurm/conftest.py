"""Fixtures for tests that need the real Slurm test cluster (slurm/testcluster.sh).

Policy (the same for every test that uses ``slurm_cluster``):

* ``SLURM_CONF`` unset and ``CI`` is not ``true``: skip, saying how to bring the cluster up.
* ``CI=true``: the cluster must be up and healthy, otherwise the test FAILS (never skips).
* ``SLURM_CONF`` set but the cluster is not healthy: fail (the caller asked for the cluster).

The fixture never starts the cluster; ``.ci/run`` runs ``slurm/testcluster.sh up`` first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import cli_env

REPO = Path(__file__).resolve().parents[2]
UP_HINT = (
    "bring it up with `slurm/testcluster.sh up` and "
    "`source /tmp/sft-launch-cluster/env.sh` (or export SLURM_CONF)"
)
# States of a node that can run jobs (sinfo %t): anything else (down, drain, a trailing '*'
# for "not responding", ...) is unhealthy.
USABLE_STATES = {"idle", "mix", "alloc", "comp"}


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def _slurm_env(conf: str) -> dict[str, str]:
    """Environment for Slurm commands and jobs: the caller's, our SLURM_CONF, and a PATH that
    finds the project's venv first (sbatch exports it into the job) and the Slurm binaries."""
    env = dict(os.environ)
    env["SLURM_CONF"] = conf
    venv_bin = str(Path(sys.executable).parent)
    parts = [venv_bin, *env.get("PATH", "").split(os.pathsep), "/usr/local/bin", "/usr/bin", "/bin"]
    env["PATH"] = os.pathsep.join(dict.fromkeys(p for p in parts if p))
    return env


def _cluster_problem(env: dict[str, str]) -> str | None:
    """None when the cluster answers and has >= 2 usable nodes, else what is wrong."""
    conf = env["SLURM_CONF"]
    if not Path(conf).is_file():
        return f"SLURM_CONF={conf} does not exist"
    if shutil.which("scontrol", path=env["PATH"]) is None:
        return "scontrol is not installed"
    try:
        ping = subprocess.run(
            ["scontrol", "ping"], env=env, capture_output=True, text=True, timeout=20
        )
        if "is UP" not in ping.stdout:
            return f"slurmctld does not answer `scontrol ping`: {ping.stdout}{ping.stderr}".strip()
        sinfo = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %t"],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        return f"Slurm commands failed: {exc}"
    states = dict(line.split() for line in sinfo.stdout.splitlines() if line.strip())
    usable = [node for node, state in states.items() if state in USABLE_STATES]
    if len(usable) < 2:
        return f"fewer than 2 usable nodes: {states}"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> dict[str, str]:
    """The environment (full dict, with SLURM_CONF and PATH) to run Slurm commands with."""
    conf = os.environ.get("SLURM_CONF")
    if not conf:
        if _in_ci():
            pytest.fail(
                f"CI=true but SLURM_CONF is unset: the Slurm test cluster is down; {UP_HINT}"
            )
        pytest.skip(f"Slurm test cluster not configured (SLURM_CONF unset); {UP_HINT}")
    env = _slurm_env(conf)
    problem = _cluster_problem(env)
    if problem:
        pytest.fail(
            f"Slurm test cluster is not healthy ({problem}); "
            f"see `slurm/testcluster.sh status`, or unset SLURM_CONF to skip. {UP_HINT}"
        )
    return env


@dataclass
class SlurmJob:
    job_id: int
    state: str  # e.g. COMPLETED, FAILED, TIMEOUT, CANCELLED
    exit_code: str  # "rc:signal", as scontrol reports it
    output: str  # contents of the job's --output file


def _job_field(job_id: int, env: dict[str, str], field: str) -> str:
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", str(job_id)],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    ).stdout
    for token in out.split():
        key, _, value = token.partition("=")
        if key == field:
            return value
    return ""


@pytest.fixture
def sbatch(slurm_cluster: dict[str, str]) -> Iterator[Callable[..., SlurmJob]]:
    """Submit a batch script and wait for it: ``sbatch(script_path, *args, timeout=60)``.

    ``args`` go to sbatch before the script (e.g. ``"--nodes=2"``). The job's output goes to
    ``<script>.out`` unless ``--output=PATH`` is given (no ``%j`` patterns). On timeout the
    test fails with the output so far; every job submitted is cancelled at teardown.
    """
    submitted: list[int] = []

    def run(script: Path, *args: str, timeout: float = 60) -> SlurmJob:
        script = Path(script)
        extra = list(args)
        given = [a.split("=", 1)[1] for a in extra if a.startswith("--output=")]
        output = Path(given[-1]) if given else script.with_suffix(".out")
        if not given:
            extra.append(f"--output={output}")
        sub = subprocess.run(
            ["sbatch", "--parsable", *extra, str(script)],
            env=slurm_cluster,
            capture_output=True,
            text=True,
            timeout=30,
            cwd=script.parent,
        )
        assert sub.returncode == 0, f"sbatch failed: {sub.stderr}"
        job_id = int(sub.stdout.strip().split(";")[0])
        submitted.append(job_id)
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = _job_field(job_id, slurm_cluster, "JobState")
            if state and state not in {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING"}:
                break
            time.sleep(0.5)
        else:
            text = output.read_text() if output.exists() else "<no output>"
            pytest.fail(f"job {job_id} still {state} after {timeout}s; output:\n{text}")
        text = output.read_text() if output.exists() else ""
        return SlurmJob(job_id, state, _job_field(job_id, slurm_cluster, "ExitCode"), text)

    yield run
    for job_id in submitted:  # never leave a test's job behind
        subprocess.run(["scancel", str(job_id)], env=slurm_cluster, capture_output=True, timeout=20)


@pytest.fixture(scope="module")
def env(slurm_cluster: dict[str, str]) -> dict[str, str]:
    """A user's environment (offline hubs, no W&B key) pointed at the test cluster."""
    return cli_env(SLURM_CONF=slurm_cluster["SLURM_CONF"], PATH=slurm_cluster["PATH"])
