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
from tests.helpers.run_folder import plan, summary

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
                     "--set", "train.generation_prompts=0", "--set", "tracking.mode=disabled",
                     env=cli_env(HF_HOME=str(hub_home)))
    assert result.returncode == 0, result.stdout + result.stderr
    snapshot = hub_home / "hub" / "models--acme--tiny-llama" / "snapshots" / COMMIT
    assert plan(run_dir).model_path == str(snapshot)  # the job reads a local folder
    assert "export HF_HUB_OFFLINE=1" in (run_dir / "launch.sh").read_text()
    assert (run_dir / "final" / "config.json").is_file()


def test_plan_of_a_hub_id_sizes_the_cached_model(run_cli, hub_home: Path,
                                                 tiny_llama: Path) -> None:
    from launcher.planner.model_shape import read_model_shape

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


DATA_ID = "acme/tiny-alpaca"
TRAIN_ROWS, EVAL_ROWS = 48, 16


def alpaca_rows() -> list[dict[str, str]]:
    recipe = ALPACA.parent / "data" / "alpaca" / "alpaca_en_demo.json"
    return json.loads(recipe.read_text())[: TRAIN_ROWS + EVAL_ROWS]


def datasets_cache(home: Path, source: Path) -> None:
    """`source`'s train and validation files as `load_dataset("acme/tiny-alpaca")` leaves them
    in HF_HOME: built by the real `datasets` builder, in `acme___tiny-alpaca/default/...`."""
    import datasets
    from datasets.packaged_modules.json.json import Json

    cache = home / "datasets"
    builder = Json(cache_dir=str(cache), dataset_name=DATA_ID.split("/")[1], config_name="default",
                   config_id="default", hash=COMMIT,
                   data_files={split: str(source / f"{split}.jsonl")
                               for split in ("train", "validation")})
    builder.download_and_prepare()
    (cache / DATA_ID.split("/")[1]).rename(cache / DATA_ID.replace("/", "___"))
    assert datasets.config.HF_DATASETS_CACHE  # the layout datasets reads offline: name/config/...


@pytest.fixture(scope="module")
def hub_data_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An HF_HOME holding acme/tiny-alpaca, and a Hub-style folder of the same rows."""
    home, folder = tmp_path_factory.mktemp("hf-data-home"), tmp_path_factory.mktemp("repo")
    rows = alpaca_rows()
    for split, part in (("train", rows[:TRAIN_ROWS]), ("validation", rows[TRAIN_ROWS:])):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    datasets_cache(home, folder)
    return home, folder


def test_a_hub_dataset_trains_offline_from_the_datasets_cache(
        run_cli, tiny_llama: Path, hub_data_home: tuple[Path, Path], tmp_path: Path) -> None:
    home, _ = hub_data_home
    run_dir = tmp_path / "run"
    result = run_cli(ALPACA, "--backend", "local", "--run-dir", run_dir, "--quiet",
                     "--set", f"model.path='{tiny_llama}'", "--set", f"data.train='hf:{DATA_ID}'",
                     "--set", f"data.eval='hf:{DATA_ID}?split=validation'",
                     "--set", "train.max_steps=2", "--set", "train.global_batch_size=8",
                     "--set", "train.generation_prompts=0", "--set", "tracking.mode=disabled",
                     env=cli_env(HF_HOME=str(home)))
    assert result.returncode == 0, result.stdout + result.stderr
    done = summary(run_dir)
    assert (done.data.train_rows, done.data.eval_rows) == (TRAIN_ROWS, EVAL_ROWS)
    assert done.eval  # evaluated on the validation split
    assert "export HF_HUB_OFFLINE=1" in (run_dir / "launch.sh").read_text()


def test_a_hub_style_folder_is_read_relative_to_the_recipe(
        run_cli, tiny_llama: Path, hub_data_home: tuple[Path, Path], tmp_path: Path) -> None:
    _, folder = hub_data_home
    recipe = folder.parent / "recipe.toml"
    recipe.write_text(f'[model]\npath = "{tiny_llama}"\n[task]\nkind = "causal_lm"\n'
                      f'[data]\nformat = "alpaca"\ntrain = "hf:./{folder.name}"\n'
                      f'eval = "hf:./{folder.name}?split=validation"\n')
    result = run_cli("preview", recipe, "--rows", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"1 of {TRAIN_ROWS} training examples" in result.stdout
    assert alpaca_rows()[0]["instruction"][:40] in result.stdout


def test_a_hub_dataset_missing_offline_or_a_wrong_split_is_one_error(
        run_cli, tiny_llama: Path, hub_data_home: tuple[Path, Path], tmp_path: Path) -> None:
    home, _ = hub_data_home
    env = cli_env(HF_HOME=str(home))
    model = ("--set", f"model.path='{tiny_llama}'")
    result = run_cli(ALPACA, "--run-dir", tmp_path / "a", "--dry-run", *model,
                     "--set", "data.train='hf:acme/not-cached'", env=env)
    assert_one_error(result, "data.train", "hf:acme/not-cached", "HF_HOME")
    result = run_cli(ALPACA, "--run-dir", tmp_path / "b", "--dry-run", *model,
                     "--set", f"data.eval='hf:{DATA_ID}?split=tset'", env=env)
    assert_one_error(result, "data.eval", "tset", "validation")
    result = run_cli(ALPACA, "--run-dir", tmp_path / "c", "--dry-run", *model,
                     "--set", f"data.train='hf:{DATA_ID}?splt=train'", env=env)
    assert_one_error(result, "data.train", "?subset=...&split=...&revision=...")
    assert not any((tmp_path / name).exists() for name in "abc")
