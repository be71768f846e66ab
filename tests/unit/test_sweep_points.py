"""Sweep points from --grid (all of them, or a seeded random sample), and what refuses them."""

from __future__ import annotations

import pytest

from launcher.contract.errors import UsageError
from launcher.ops.sweep import parse_grid, points_of


def test_the_grid_is_every_combination_in_order() -> None:
    grid = parse_grid(["train.lr=1e-5, 3e-5", "model.path='a','b'", "train.seed=1"])
    assert grid == {"train.lr": ("1e-5", "3e-5"), "model.path": ("'a'", "'b'"),
                    "train.seed": ("1",)}
    points = points_of(grid, None, 0)
    assert len(points) == 4
    assert points[0] == {"train.lr": "1e-5", "model.path": "'a'", "train.seed": "1"}
    assert points[-1] == {"train.lr": "3e-5", "model.path": "'b'", "train.seed": "1"}


def test_a_random_draw_is_seeded_and_without_repeats() -> None:
    grid = parse_grid(["train.lr=1,2,3,4", "train.seed=1,2,3"])
    drawn = points_of(grid, 5, seed=7)
    assert drawn == points_of(grid, 5, seed=7) != points_of(grid, 5, seed=8)
    assert len({tuple(p.items()) for p in drawn}) == 5
    with pytest.raises(UsageError, match="--random 13: the grid has 12 point"):
        points_of(grid, 13, 0)


@pytest.mark.parametrize("bad", ["train.lr", "=1,2", "train.lr=", "train.lr=,"])
def test_malformed_grids_are_refused(bad: str) -> None:
    with pytest.raises(UsageError, match="expected KEY=VALUE,VALUE"):
        parse_grid([bad])
    with pytest.raises(UsageError, match="given twice"):
        parse_grid(["train.lr=1", "train.lr=2"])


def test_a_bad_point_writes_nothing(run_cli, tmp_path) -> None:
    from tests.conftest import REPO

    sweep_dir = tmp_path / "sweep"
    result = run_cli("sweep", REPO / "recipes" / "quickstart.toml", "--backend", "local",
                     "--sweep-dir", sweep_dir, "--grid", "train.lr=1e-4,-1", "--dry-run")
    assert result.returncode == 2 and result.stderr.count("error:") == 1, result.stderr
    assert "train.lr" in result.stderr and not sweep_dir.exists()
