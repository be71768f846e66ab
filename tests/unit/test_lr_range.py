"""The lr range test's arithmetic on synthetic curves: the ramp, smoothing, divergence, and a
suggestion where the loss falls fastest, also through noise."""

from __future__ import annotations

import itertools
import math

import pytest

from launcher.planner.lr_range import DIVERGED, diverged_at, ramp, smoothed, suggest


def test_the_ramp_is_log_uniform_from_min_to_max() -> None:
    lrs = [ramp(1e-6, 1.0, 7, step) for step in range(7)]
    assert lrs[0] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(1.0)
    assert all(b / a == pytest.approx(10.0) for a, b in itertools.pairwise(lrs))


def test_smoothing_is_bias_corrected() -> None:
    assert smoothed([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    assert smoothed([1.0, 3.0], beta=0.5) == pytest.approx([1.0, (0.25 + 1.5) / 0.75])


def test_divergence_is_four_times_the_minimum() -> None:
    assert diverged_at([3.0, 2.0, 1.0, 3.9, 4.1]) == 4
    assert diverged_at([1.0, 2.0, 3.0]) is None
    assert diverged_at([1.0, math.nan]) == 1
    assert DIVERGED == 4.0


def falling_then_diverging(lr: float, steepest_at: float) -> float:
    """A smooth loss that falls fastest (per log-lr) at `steepest_at`, then blows up past 10x."""
    x = math.log10(lr) - math.log10(steepest_at)
    return 2.0 - math.tanh(2 * x) + (0.0 if lr < 10 * steepest_at else 50 * (x - 1) ** 2)


@pytest.mark.parametrize("steepest_at", [3e-5, 1e-3, 2e-2])
def test_the_suggestion_is_where_the_smoothed_loss_falls_fastest(steepest_at: float) -> None:
    lrs = [ramp(1e-7, 1.0, 100, step) for step in range(100)]
    losses = [falling_then_diverging(lr, steepest_at) for lr in lrs]
    found = suggest(lrs, losses)
    assert found.method == "steepest descent"
    assert abs(math.log10(found.lr / steepest_at)) < 0.1  # within one ramp step (10^0.07)
    assert found.index < (diverged_at(smoothed(losses)) or len(losses))


@pytest.mark.parametrize(("amplitude", "frequency"), [(0.05, 2.4), (0.15, 2.4), (0.15, 1.3),
                                                      (0.15, 0.7)])
def test_noise_does_not_move_the_suggestion(amplitude: float, frequency: float) -> None:
    """Noise as large as a real run's: the fitted slope still finds the steepest point within
    two ramp steps, where the steepest point of the EMA-smoothed curve lands a third of a
    decade or more too high (its lag)."""
    lrs = [ramp(1e-7, 1.0, 100, step) for step in range(100)]
    losses = [falling_then_diverging(lr, 1e-4) + amplitude * math.sin(frequency * step)
              for step, lr in enumerate(lrs)]
    curve = smoothed(losses)
    lagging = min(range(10, 60), key=lambda i: (curve[i + 1] - curve[i - 1]) / math.log(
        lrs[i + 1] / lrs[i - 1]))
    assert math.log10(lrs[lagging] / 1e-4) > 0.3
    found = suggest(lrs, losses)
    assert found.method == "steepest descent"
    assert abs(math.log10(found.lr / 1e-4)) < 0.15


def test_a_curve_that_never_falls_suggests_its_minimum_over_ten() -> None:
    lrs = [ramp(1e-5, 1.0, 20, step) for step in range(20)]
    losses = [1.0 + 0.01 * step for step in range(20)]
    found = suggest(lrs, losses)
    assert (found.method, found.index) == ("minimum / 10", 0)
    assert found.lr == pytest.approx(1e-6)
