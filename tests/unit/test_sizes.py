"""Sizes in text: Slurm-style and SI/binary units, and their display."""

from __future__ import annotations

import pytest

from launcher.planner.sizes import format_bytes, parse_bytes
from tests.helpers.llama_configs import P_70B

GiB = 1 << 30


@pytest.mark.parametrize(("text", "expected"), [
    ("80GiB", 80 * GiB), ("80GB", 80 * 10**9), ("512MiB", 512 << 20), ("24G", 24 * GiB),
    ("1.5 TiB", 3 << 39), ("4096", 4096), ("10b", 10), ("2kb", 2000), ("8gib", 8 * GiB),
])
def test_parse_bytes(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "GiB", "80 GiBs", "-1GB", "1e9", "eighty"])
def test_parse_bytes_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="as a size"):
        parse_bytes(text)


def test_format_bytes_round_trip() -> None:
    assert [format_bytes(n) for n in (0, 1023, 1024, 80 * GiB, 3 << 39)] == [
        "0 B", "1023 B", "1.0 KiB", "80.0 GiB", "1.5 TiB"]
    for n in (1536, 123_456_789, 80 * 10**9, P_70B * 16):  # one decimal: within 0.05 units
        value, unit = format_bytes(n).split()
        assert abs(parse_bytes(format_bytes(n)) - n) <= 0.05 * parse_bytes(f"1{unit}")
        assert parse_bytes(format_bytes(parse_bytes(f"{value}{unit}"))) == parse_bytes(
            f"{value}{unit}")
