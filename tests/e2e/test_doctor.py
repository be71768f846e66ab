"""`sft-launch doctor`: the real preflight on 2 local processes over gloo (measured links, the
JSON written), a rank with another torch named (the SFT_LAUNCH_PREFLIGHT_FAKE_VERSION test hook),
and a rank that never joins named within a minute."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.contract.preflight import PreflightResult
from launcher.contract.run_folder import RunFolder
from tests.conftest import REPO, SFT_LAUNCH, cli_env
from tests.e2e.conftest import QUICKSTART

pytestmark = pytest.mark.slow


def doctor(run_dir: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SFT_LAUNCH, "doctor", QUICKSTART, "--backend", "local", "--procs-per-node", "2",
         "--run-dir", run_dir, "--set", "tracking.mode=disabled"],
        cwd=REPO, env=cli_env(**env), capture_output=True, text=True, timeout=300)


def test_two_local_processes_measure_their_links_and_pass(tmp_path: Path) -> None:
    done = doctor(tmp_path / "run")
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    result = PreflightResult.read(RunFolder(tmp_path / "run").preflight)
    assert result.healthy and result.world_size == 2 and result.backend == "gloo"
    assert [r.rank for r in result.ranks] == [0, 1]
    assert all(r.shared_folder and r.versions["torch"] for r in result.ranks)
    assert all(r.allreduce_mb_s > 0 and r.p2p_mb_s > 0 and r.latency_ms > 0
               for r in result.ranks)
    (figures,) = result.node_figures
    assert figures.p2p_mb_s > 0 and figures.ranks == (0, 1)
    assert "p2p MB/s" in said and "healthy: every node passed every check" in said


def test_a_rank_with_another_torch_is_named_and_doctor_exits_2(tmp_path: Path) -> None:
    done = doctor(tmp_path / "run", SFT_LAUNCH_PREFLIGHT_FAKE_VERSION="1:torch=0.0")
    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    result = PreflightResult.read(RunFolder(tmp_path / "run").preflight)
    (finding,) = result.findings
    assert (finding.node, finding.ranks, finding.check) == (0, (1,), "versions")
    assert f"BAD node 0 ({socket.gethostname()}, rank(s) 1): versions: torch 0.0" in said, said
    assert "Traceback" not in said


def test_a_rank_that_never_joins_is_named_within_a_minute(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert doctor(run_dir).returncode == 0  # a planned run folder
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**cli_env(), "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "GROUP_RANK": "0",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    os.remove(RunFolder(run_dir).preflight_joined(1))  # rank 1 never starts
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "launcher.worker.preflight", run_dir],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert time.monotonic() - start < 65
    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    assert "BAD node 0 (?, rank(s) 1): joined: never joined the process group" in said, said
    result = PreflightResult.read(RunFolder(run_dir).preflight)
    assert [(f.ranks, f.check) for f in result.findings] == [((1,), "joined")]
