"""Models named by Hub id, offline: a Hugging Face cache built by the test in the cache's own
layout (refs/, snapshots/ of links into blobs/), read by the real huggingface_hub."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from launcher.contract.plan import MemoryEstimate
from tests.conftest import assert_one_error, cli_env
from tests.e2e.conftest import ALPACA
from tests.helpers.run_folder import plan

pytestmark = pytest.mark.slow
REPO_ID, COMMIT = "acme/tiny-llama", "3f1c0ffee0ddba11c0de5eed0123456789abcdef"


def hub_cache(home: Path, model: Path) -> Path:
    """`model`'s files as `hf download acme/tiny-llama` leaves them in HF_HOME; the snapshot."""
    repo = home / "hub" / f"models--{REPO_ID.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in model.iterdir():
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        blob.write_bytes(file.read_bytes())
        (snapshot / file.name).symlink_to(Path("../../blobs") / blob.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


@pytest.fixture(scope="module")
def hub_home(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("hf-home")
    hub_cache(home, tiny_llama)
    return home


def test_a_hub_id_trains_offline_from_the_cache(run_cli, hub_home: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli(ALPACA, "--backend", "local", "--run-dir", run_dir, "--quiet",
                     "--set", f"model.path='{REPO_ID}'", "--set", "train.max_steps=2",
                     "--set", "data.max_train_samples=32", "--set", "train.global_batch_size=8",
                     "--set", "train.sample_prompts=0", "--set", "tracking.mode=disabled",
                     env=cli_env(HF_HOME=str(hub_home)))
    assert result.returncode == 0, result.stdout + result.stderr
    snapshot = hub_home / "hub" / "models--acme--tiny-llama" / "snapshots" / COMMIT
    assert plan(run_dir).model_path == str(snapshot)  # the job reads a local folder
    assert "export HF_HUB_OFFLINE=1" in (run_dir / "launch.sh").read_text()
    assert (run_dir / "final" / "config.json").is_file()


def test_plan_of_a_hub_id_sizes_the_cached_model(run_cli, hub_home: Path,
                                                 tiny_llama: Path) -> None:
    from launcher.plan.model_shape import read_model_shape

    result = run_cli("plan", ALPACA, "--json", "--set", f"model.path='{REPO_ID}'",
                     "--set", "model.revision=main", env=cli_env(HF_HOME=str(hub_home)))
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    estimates = [MemoryEstimate.from_dict({k: v for k, v in e.items() if k != "label"})
                 for e in printed]
    labels = [e.label for e in estimates]
    assert labels == [e["label"] for e in printed]
    assert labels == ["ddp", "zero2", "fsdp", "zero3", "zero3+offload"]
    params = read_model_shape(tiny_llama, task="causal_lm").num_parameters
    assert estimates[0].params_bytes == 4 * params  # fp32, the exact count from config.json
    assert all(e.peak_bytes > e.total_bytes for e in estimates)


def test_a_hub_id_missing_from_an_offline_cache_is_one_error(run_cli, hub_home: Path,
                                                             tmp_path: Path) -> None:
    result = run_cli(ALPACA, "--run-dir", tmp_path / "run", "--dry-run",
                     "--set", "model.path='acme/not-cached'", env=cli_env(HF_HOME=str(hub_home)))
    assert_one_error(result, "model.path", "acme/not-cached is not in the Hugging Face cache")
    assert not (tmp_path / "run").exists()
