"""The run folder a user gets: golden files, and a dry run that never imports torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO
from tests.helpers.golden import GOLDEN, rendered


def test_golden_files_match(tmp_path: Path) -> None:
    """Every golden file, as rendered now: local run folders of the shipped recipes and the
    Slurm job scripts (compared always; `make golden` rewrites them)."""
    texts = rendered(tmp_path)
    assert sorted(texts) == sorted(str(p.relative_to(GOLDEN)) for p in GOLDEN.rglob("*")
                                   if p.is_file()), "a golden file is missing or left over"
    for name, text in texts.items():
        assert text == (GOLDEN / name).read_text(), (
            f"{name} differs from its golden file: `make golden`, then review the diff")


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
