"""The package as a user installs it: a wheel (not this checkout), run from another folder.

The wheel is built from this checkout and installed with `--no-deps` into a fresh virtualenv;
its dependencies (torch & co.) come from the project's venv through PYTHONPATH, so the code and
the templates can only come from the wheel.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, cli_env
from tests.helpers.run_folder import plan, rank_reports, summary

pytestmark = pytest.mark.slow
QUICKSTART = REPO / "recipes" / "quickstart.toml"


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a fresh virtualenv holding only the wheel of this checkout."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w",
                    str(root / "dist"), str(REPO)], check=True, capture_output=True)
    wheels = list((root / "dist").glob("sft_launch-*.whl"))
    assert len(wheels) == 1, wheels
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    subprocess.run([root / "venv/bin/pip", "install", "--quiet", "--no-deps", str(wheels[0])],
                   check=True, capture_output=True)
    return root / "venv" / "bin"


def user_env(venv: Path, **extra: str) -> dict[str, str]:
    """Dependencies from the project venv; nothing of this checkout on the path; no Slurm."""
    env = cli_env(PYTHONPATH=os.pathsep.join(site.getsitepackages()), **extra)
    env.pop("SLURM_CONF", None)
    env["PATH"] = f"{venv}:{env['PATH']}"
    return env


def sft(venv: Path, cwd: Path, *args: object, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([venv / "sft-launch", *map(str, args)], cwd=cwd,
                          env=user_env(venv, **env), capture_output=True, text=True, timeout=600)


def test_the_installed_package_is_the_wheel(venv: Path, tmp_path: Path) -> None:
    out = subprocess.run([venv / "python", "-c", "import launcher; print(launcher.__file__)"],
                         cwd=tmp_path, env=user_env(venv), capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip().startswith(str(venv.parent)), out.stdout


def test_dry_runs_render_from_package_data(venv: Path, tmp_path: Path) -> None:
    local = sft(venv, tmp_path, QUICKSTART, "--dry-run", "--backend", "local",
                "--run-dir", tmp_path / "local")
    assert local.returncode == 0, local.stderr
    for name in ("accelerate.yaml", "launch.sh", "plan.json", "recipe.toml"):
        assert (tmp_path / "local" / name).is_file(), name
    # No sbatch on this PATH (only the venv): a Slurm script renders anyway, to read or copy.
    slurm = sft(venv, tmp_path, QUICKSTART, "--dry-run", "--backend", "slurm", "--nodes", "2",
                "--run-dir", tmp_path / "slurm", PATH=str(venv))
    assert slurm.returncode == 0, slurm.stderr
    script = (tmp_path / "slurm" / "job.sbatch").read_text()
    assert "#SBATCH --nodes=2" in script and "srun" in script
    refused = sft(venv, tmp_path, QUICKSTART, "--backend", "slurm", "--nodes", "2",
                  "--run-dir", tmp_path / "refused", PATH=str(venv))
    assert refused.returncode == 2 and "no `sbatch` on PATH" in refused.stderr, refused.stderr
    assert "--dry-run" in refused.stderr


def test_a_two_step_local_launch(venv: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = sft(venv, tmp_path, QUICKSTART, "--backend", "local", "--run-dir", run_dir,
                 "--quiet", "--set", "train.max_steps=2", "--set", "data.max_train_samples=64",
                 "--set", "data.max_eval_samples=16", "--set", "tracking.mode=disabled")
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary(run_dir).steps == 2
    assert [r.world_size for r in rank_reports(run_dir)] == [2, 2]
    assert plan(run_dir).recipe_file == str(QUICKSTART)
    assert (run_dir / "final" / "model.safetensors").is_file()
