"""The local backend's rendezvous port: launch.sh's, derived from the folder's name, unless that
port is taken on this machine (another run in a folder of the same name)."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

from launcher.backends.local import _port_env
from launcher.contract.run_folder import RunFolder
from launcher.render.run_folder import default_port


def unique(tmp_path: Path) -> RunFolder:
    """A folder whose name no other run on this machine has (its port: free)."""
    return RunFolder(tmp_path / f"run-{uuid.uuid4().hex}")


def test_a_free_port_is_launch_shs_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SFT_LAUNCH_PORT", raising=False)
    assert _port_env(unique(tmp_path)) is None


def test_a_taken_port_is_replaced_by_a_free_one(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SFT_LAUNCH_PORT", raising=False)
    folder = unique(tmp_path)
    with socket.socket() as other_run:
        other_run.bind(("", default_port(folder.path)))
        other_run.listen()
        env = _port_env(folder)
        assert env is not None
        port = int(env["SFT_LAUNCH_PORT"])
        assert port != default_port(folder.path)
        with socket.socket() as ours:
            ours.bind(("", port))  # free
    monkeypatch.setenv("SFT_LAUNCH_PORT", "23456")
    with socket.socket() as other_run:
        other_run.bind(("", default_port(folder.path)))
        assert _port_env(folder) is None  # the user's choice stands
