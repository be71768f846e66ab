"""`sft-launch lr-find` on the quickstart: a real range test, the suggestion and its picture."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.contract.reports import LrCurve, LrFindResult
from launcher.contract.run_folder import RunFolder
from launcher.planner.lr_range import ramp
from tests.e2e.conftest import QUICKSTART
from tests.helpers.png import png_size

pytestmark = pytest.mark.slow
STEPS = 30


def test_lr_find_suggests_an_lr_and_draws_the_curve(run_cli, tmp_path: Path) -> None:
    run_dir = tmp_path / "lr-find"
    result = run_cli("lr-find", QUICKSTART, "--backend", "local", "--run-dir", run_dir,
                     "--steps", str(STEPS), "--min", "1e-6", "--max", "10", "--quiet",
                     "--set", "data.max_train_samples=960", "--set", "data.max_eval_samples=16")
    assert result.returncode == 0, result.stdout + result.stderr
    folder = RunFolder(run_dir)
    curve, found = LrCurve.read(folder.lr_curve), LrFindResult.read(folder.lr_find)
    steps = len(curve.lrs)
    assert 3 <= steps <= STEPS and (steps == STEPS) != curve.diverged
    assert curve.lrs == pytest.approx([ramp(1e-6, 10.0, STEPS, step) for step in range(steps)])
    assert found.lrs == curve.lrs and found.losses == curve.losses
    assert found.suggested_lr in found.lrs or found.method == "minimum / 10"
    assert 1e-7 <= found.suggested_lr <= 10
    shown = f"{found.suggested_lr:.3g}"
    assert f"suggested train.lr = {shown}" in result.stderr
    assert f"--set train.lr={shown}" in result.stderr
    assert png_size(folder.lr_find.with_suffix(".png")) == (700, 450)
    assert not folder.final.exists() and not folder.summary.exists()
    assert not list(folder.checkpoints.glob("step-*"))
