"""The run folder a user gets: golden files, and a dry run that never imports torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.plan import memory_plan
from launcher.plan.plan import make_plan
from launcher.recipe.load import load_recipe
from launcher.render.run_folder import write_run_folder
from tests.conftest import REPO

GOLDEN = REPO / "tests" / "golden"
TINY_LLAMA = REPO / "tests" / "fixtures" / "tiny-llama"
UPDATE = os.environ.get("SFT_UPDATE_GOLDEN") == "1"


def normalise(text: str, run_parent: Path, model_path: str) -> str:
    return (text.replace(model_path, "<MODEL>").replace(str(run_parent), "<RUNS>")
            .replace(str(REPO), "<REPO>"))


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run with SFT_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), f"{name} differs from its golden file (SFT_UPDATE_GOLDEN=1)"


@pytest.mark.parametrize("recipe_name", ["quickstart", "alpaca-tiny-llama"])
def test_local_run_folder_matches_golden_files(recipe_name: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(memory_plan, "_host_memory", lambda: 24 * 2**30)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    recipe_file = REPO / "recipes" / f"{recipe_name}.toml"
    # The tiny Llama is built by `make-tiny-model`; its config alone is a fixture.
    overrides = [f"model.path='{TINY_LLAMA}'"] if recipe_name == "alpaca-tiny-llama" else []
    recipe = load_recipe(recipe_file, overrides)
    plan = make_plan(recipe, recipe_file=str(recipe_file), backend="local", gpus_here=0)
    folder = write_run_folder(tmp_path / "golden-run", recipe, plan, python="/opt/venv/bin/python")
    for name in ("recipe.toml", "plan.json", "accelerate.yaml", "launch.sh"):
        text = normalise((folder.path / name).read_text(), tmp_path, plan.model_path)
        check_golden(f"{recipe_name}/{name}", text)


def test_dry_run_writes_the_folder_without_importing_torch(tmp_path: Path) -> None:
    run_dir = tmp_path / "dry"
    script = f"""
import sys
from launcher.cli import main
try:
    main([{str(REPO / 'recipes/quickstart.toml')!r}, "--backend", "local", "--dry-run",
          "--run-dir", {str(run_dir)!r}])
except SystemExit as exit:
    assert not exit.code, exit.code
heavy = sorted(m for m in ("torch", "transformers", "deepspeed", "accelerate", "datasets")
               if m in sys.modules)
print("heavy:", heavy)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=REPO, check=True)
    assert "heavy: []" in out.stdout, out.stdout + out.stderr
    for name in ("recipe.toml", "plan.json", "accelerate.yaml", "launch.sh", "logs",
                 "checkpoints"):
        assert (run_dir / name).exists(), name
    assert not (run_dir / "summary.json").exists()
