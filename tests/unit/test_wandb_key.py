"""The W&B key check before submission, against stand-ins for the W&B cloud."""

from __future__ import annotations

import socket
from pathlib import Path

from launcher.trackers.wandb_key import KeyCheck, check_key
from tests.conftest import REPO, cli_env
from tests.helpers.fake_wandb import fake_wandb

KEY = "0123456789abcdef" * 2 + "01234567"
QUICKSTART = REPO / "recipes" / "quickstart.toml"


def test_verdicts() -> None:
    with fake_wandb(200, {"data": {"viewer": {"id": "VXNlcjox"}}}) as url:
        assert check_key(KEY, url)[0] is KeyCheck.ACCEPTED
    with fake_wandb(401) as url:
        verdict, why = check_key(KEY, url)
        assert verdict is KeyCheck.REJECTED and "401" in why
    with fake_wandb(200, {"data": {"viewer": None}}) as url:
        assert check_key(KEY, url)[0] is KeyCheck.REJECTED
    with fake_wandb(404) as url:
        assert check_key(KEY, url)[0] is KeyCheck.UNREACHABLE
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert check_key(KEY, f"http://127.0.0.1:{port}")[0] is KeyCheck.UNREACHABLE


def test_a_rejected_key_stops_the_launch_before_anything_is_written(run_cli,
                                                                    tmp_path: Path) -> None:
    with fake_wandb(401) as url:
        result = run_cli(QUICKSTART, "--backend", "local", "--run-dir", tmp_path / "run",
                         "--set", "tracking.mode=online",
                         env=cli_env(WANDB_API_KEY=KEY, WANDB_BASE_URL=url))
    assert result.returncode == 2, result.stderr
    assert "error: W&B rejected WANDB_API_KEY" in result.stderr
    assert "Traceback" not in result.stderr and KEY not in result.stderr
    assert not (tmp_path / "run").exists()
