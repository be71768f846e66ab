"""Tracking never stops training: W&B unreachable, or rejecting the key on the workers."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from launcher.contract.events import TrackingOffline, TrainLogged
from tests.conftest import REPO, SFT_LAUNCH, cli_env
from tests.e2e.conftest import QUICKSTART
from tests.helpers.fake_wandb import fake_wandb
from tests.helpers.run_folder import events, of_kind, summary
from tests.helpers.wandb_file import find_run_files, logged_steps, read_run_id

pytestmark = pytest.mark.slow
KEY = "0123456789abcdef" * 2 + "01234567"  # well-formed, accepted by no server
SHORT = ["--backend", "local", "--quiet", "--set", "data.max_train_samples=192",
         "--set", "data.max_eval_samples=32", "--set", "train.log_every=1",
         "--set", "tracking.mode=online", "--set", "tracking.timeout_s=5"]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_logged_offline(run_dir: Path, output: str) -> TrackingOffline:
    offline = of_kind(events(run_dir), TrackingOffline)
    assert len(offline) == 1, output
    steps = [e.step for e in of_kind(events(run_dir), TrainLogged)]
    assert steps and logged_steps(run_dir / "wandb", "train/loss") == steps
    assert len({read_run_id(f) for f in find_run_files(run_dir / "wandb")}) == 1
    for path in run_dir.rglob("*"):
        assert not path.is_file() or KEY.encode() not in path.read_bytes(), path
    assert KEY not in output
    return offline[0]


def test_no_route_to_wandb_logs_offline_and_trains_on(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = cli_env(WANDB_API_KEY=KEY, WANDB_BASE_URL=f"http://127.0.0.1:{closed_port()}")
    result = subprocess.run([*SFT_LAUNCH, QUICKSTART, "--run-dir", run_dir, *SHORT], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "W&B: not reachable from this machine" in result.stderr
    offline = assert_logged_offline(run_dir, result.stdout + result.stderr)
    assert f"upload later with `wandb sync {run_dir}/wandb/offline-run-*`" in result.stderr
    assert "CommError" in offline.reason
    assert summary(run_dir).steps == 6


def test_a_key_the_service_rejects_on_the_nodes_logs_offline(run_cli, tmp_path: Path) -> None:
    """The launch machine could not check the key (a dry run, then launch.sh by hand); the
    worker's W&B init is refused with HTTP 401."""
    run_dir = tmp_path / "run"
    assert run_cli(QUICKSTART, "--run-dir", run_dir, *SHORT, "--dry-run").returncode == 0
    with fake_wandb(401) as url:
        env = cli_env(WANDB_API_KEY=KEY, WANDB_BASE_URL=url)
        done = subprocess.run(["bash", "launch.sh"], cwd=run_dir, env=env, capture_output=True,
                              text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    offline = assert_logged_offline(run_dir, done.stdout + done.stderr)
    assert "401" in offline.reason
