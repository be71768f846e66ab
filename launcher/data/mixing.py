"""Eval splits and weighted dataset mixtures, deterministic by seed."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TypeVar

Row = TypeVar("Row")


def split_rows(rows: Sequence[Row], fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """Split `rows` into (train, eval): ``round(len * fraction)`` rows (at least one) drawn at
    random by `seed` go to eval. Both parts keep the original row order."""
    if not 0 < fraction < 1:
        raise ValueError(f"eval fraction must be between 0 and 1, got {fraction}")
    n_eval = max(1, round(len(rows) * fraction))
    if n_eval >= len(rows):
        raise ValueError(f"cannot hold out {n_eval} of {len(rows)} rows for eval")
    held_out = set(random.Random(seed).sample(range(len(rows)), n_eval))
    train = [row for index, row in enumerate(rows) if index not in held_out]
    return train, [rows[index] for index in sorted(held_out)]


def mix(
    datasets: Sequence[tuple[Sequence[Row], float]], seed: int, total: int | None = None
) -> list[Row]:
    """Mix datasets so that each one's share of the result is its weight's share of all weights.

    The result has `total` rows (default: the sum of the dataset sizes). Dataset ``i`` gives
    ``total * w_i / sum(w)`` rows (largest-remainder rounding, so the counts add up to `total`):
    fewer than it has means a random subset without repetition (under-sampling); more means every
    row once per whole multiple, plus a random subset for the remainder (over-sampling). The
    result is shuffled. The same inputs and seed always give the same list.
    """
    if not datasets:
        raise ValueError("nothing to mix")
    if any(weight <= 0 for _, weight in datasets) or any(not rows for rows, _ in datasets):
        raise ValueError("every dataset in a mixture needs rows and a positive weight")
    total = sum(len(rows) for rows, _ in datasets) if total is None else total
    weight_sum = sum(weight for _, weight in datasets)
    shares = [total * weight / weight_sum for _, weight in datasets]
    counts = [math.floor(share) for share in shares]
    by_remainder = sorted(range(len(shares)), key=lambda i: counts[i] - shares[i])
    for index in by_remainder[: total - sum(counts)]:
        counts[index] += 1
    rng = random.Random(seed)
    mixed: list[Row] = []
    for (rows, _), count in zip(datasets, counts, strict=True):
        repeats, remainder = divmod(count, len(rows))
        mixed.extend(list(rows) * repeats)
        mixed.extend(rows[index] for index in sorted(rng.sample(range(len(rows)), remainder)))
    rng.shuffle(mixed)
    return mixed
