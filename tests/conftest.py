"""Fixtures shared by all test folders: the repo, and running the real `sft-launch` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Preprocessed data of this test session only (shared by its runs), never the user's cache.
CACHE = tempfile.mkdtemp(prefix="sft-launch-test-cache-")
SFT_LAUNCH = [sys.executable, "-m", "launcher"]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment a user would have: offline hubs, no tracker settings or keys, this venv
    first on PATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WANDB_", "MLFLOW_", "PYTEST_"))}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1",
               SFT_LAUNCH_CACHE=CACHE)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.update(extra)
    return env


RunCli = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def run_cli() -> RunCli:
    """Run `sft-launch ARGS...` in the repo root; returns the completed process (text output)."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 600,
            cwd: Path = REPO) -> subprocess.CompletedProcess:
        return subprocess.run([*SFT_LAUNCH, *map(str, args)], cwd=cwd, env=env or cli_env(),
                              capture_output=True, text=True, timeout=timeout)

    return run


def assert_one_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """Bad input's answer: exit 2, one `error:` line holding every needle, no traceback."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    assert output.count("error:") == 1, output
    for needle in needles:
        assert needle in output, f"{needle!r} not in:\n{output}"
