"""Bad input: one clear message, exit code 2, no traceback, nothing written or launched."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, assert_one_error, cli_env

QUICKSTART = REPO / "recipes" / "quickstart.toml"


def recipe_copy(tmp_path: Path, extra: str = "", replace: tuple[str, str] | None = None) -> Path:
    """The quickstart recipe in tmp_path, its data alongside, optionally edited."""
    shutil.copytree(REPO / "recipes" / "data" / "sst2", tmp_path / "data" / "sst2")
    text = QUICKSTART.read_text()
    if replace:
        assert replace[0] in text
        text = text.replace(*replace)
    path = tmp_path / "recipe.toml"
    path.write_text(text + extra)
    return path


def assert_clean_failure(result, run_dir: Path, *needles: str) -> None:
    assert_one_error(result, *needles)
    assert not run_dir.exists(), "a run folder was written for a bad input"


def launch(run_cli, recipe: Path, run_dir: Path, *extra: str):
    return run_cli(recipe, "--backend", "local", "--run-dir", run_dir, "--dry-run", *extra)


def test_unknown_key(run_cli, tmp_path: Path) -> None:
    recipe = recipe_copy(tmp_path, replace=("lr = 2e-4", "lr = 2e-4\nwarmup_step = 3"))
    result = launch(run_cli, recipe, tmp_path / "run")
    assert_clean_failure(result, tmp_path / "run", str(recipe), "train.warmup_step",
                         "did you mean 'warmup_steps'")


def test_wrong_type(run_cli, tmp_path: Path) -> None:
    recipe = recipe_copy(tmp_path, replace=("epochs = 1", 'epochs = "one"'))
    result = launch(run_cli, recipe, tmp_path / "run")
    assert_clean_failure(result, tmp_path / "run", "train.epochs", "'one'")


def test_missing_data_file(run_cli, tmp_path: Path) -> None:
    recipe = recipe_copy(tmp_path, replace=("data/sst2/dev.tsv", "data/sst2/nope.tsv"))
    result = launch(run_cli, recipe, tmp_path / "run")
    assert_clean_failure(result, tmp_path / "run", "data.eval", "nope.tsv", "not found")


def test_malformed_data_row_names_file_and_line(run_cli, tmp_path: Path) -> None:
    recipe = recipe_copy(tmp_path)
    train = tmp_path / "data" / "sst2" / "train.tsv"
    lines = train.read_text().splitlines()
    lines[41] = "a sentence without its label column"
    train.write_text("\n".join(lines) + "\n")
    result = launch(run_cli, recipe, tmp_path / "run")
    assert_clean_failure(result, tmp_path / "run", f"{train}:42")


def test_unreadable_data_file(run_cli, tmp_path: Path) -> None:
    recipe = recipe_copy(tmp_path)
    train = tmp_path / "data" / "sst2" / "train.tsv"
    train.write_bytes(b"sentence\tlabel\n\xff\xfe broken \xff\t1\n")
    result = launch(run_cli, recipe, tmp_path / "run")
    assert_clean_failure(result, tmp_path / "run", str(train))


def test_batch_not_divisible_by_world(run_cli, tmp_path: Path) -> None:
    recipe = recipe_copy(tmp_path, replace=("global_batch_size = 32", "global_batch_size = 33"))
    result = launch(run_cli, recipe, tmp_path / "run")
    assert_clean_failure(result, tmp_path / "run", "train.global_batch_size",
                         "not divisible by the world size 2", "e.g. 34")


def test_micro_batch_not_dividing_global(run_cli, tmp_path: Path) -> None:
    recipe = recipe_copy(tmp_path)
    result = launch(run_cli, recipe, tmp_path / "run", "--set", "train.micro_batch_size=5")
    assert_clean_failure(result, tmp_path / "run", "micro_batch_size 5 x world size 2 = 10")


def test_token_budget_needs_ddp(run_cli, tmp_path: Path) -> None:
    recipe = recipe_copy(tmp_path)
    result = launch(run_cli, recipe, tmp_path / "run", "--set", "train.micro_batch_tokens=512",
                    "--set", "distributed.strategy=fsdp")
    assert_clean_failure(result, tmp_path / "run", "train.micro_batch_tokens",
                         "needs strategy ddp, not fsdp")


def test_extends_cycle(run_cli, tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    result = launch(run_cli, tmp_path / "a.toml", tmp_path / "run")
    assert_clean_failure(result, tmp_path / "run", "cycle in extends")


def test_bad_set_value(run_cli, tmp_path: Path) -> None:
    result = launch(run_cli, QUICKSTART, tmp_path / "run", "--set", "train.lr=fast")
    assert_clean_failure(result, tmp_path / "run", "--set train.lr")


def test_several_nodes_without_slurm(run_cli, tmp_path: Path) -> None:
    env = cli_env()
    env.pop("SLURM_CONF", None)
    result = run_cli(QUICKSTART, "--nodes", "2", "--run-dir", tmp_path / "run", "--dry-run",
                     env=env)
    if Path("/etc/slurm/slurm.conf").exists():
        pytest.skip("this machine has a system-wide Slurm configuration")
    assert_clean_failure(result, tmp_path / "run", "2 nodes need Slurm")


def test_missing_recipe_file(run_cli, tmp_path: Path) -> None:
    result = launch(run_cli, tmp_path / "nope.toml", tmp_path / "run")
    assert_clean_failure(result, tmp_path / "run", "recipe file not found")


def test_unknown_option_is_a_usage_error(run_cli, tmp_path: Path) -> None:
    result = launch(run_cli, QUICKSTART, tmp_path / "run", "--nodez", "2")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("setting", "problem"), [
    ('model.path="a\\u0000b"', "cannot contain a NUL byte"),
    (f'model.path="/{"a" * 300}/b"', "path too long for the OS"),
    ('data.eval="x\\u0000.tsv"', "cannot contain a NUL byte"),
], ids=["nul-byte", "name-over-255", "nul-in-data"])
def test_paths_the_os_cannot_open(run_cli, tmp_path: Path, setting: str, problem: str) -> None:
    """Once tracebacks (found by mutating the shipped recipes): now one message, exit 2."""
    result = launch(run_cli, QUICKSTART, tmp_path / "run", "--set", setting)
    assert_clean_failure(result, tmp_path / "run", problem)


def test_a_check_across_keys(run_cli, tmp_path: Path) -> None:
    """Found by the property-based test: offload without ZeRO-3 failed with an IndexError."""
    result = launch(run_cli, QUICKSTART, tmp_path / "run", "--set",
                    "distributed.offload_optimizer=true")
    assert_clean_failure(result, tmp_path / "run", "needs distributed.strategy = 'zero3'")
