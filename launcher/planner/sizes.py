"""Byte sizes in text: `parse_bytes("80GiB")`, `format_bytes(n)` (Slurm-style bare units)."""

from __future__ import annotations

import re

_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kib": 1 << 10, "kb": 10**3,
    "m": 1 << 20, "mib": 1 << 20, "mb": 10**6,
    "g": 1 << 30, "gib": 1 << 30, "gb": 10**9,
    "t": 1 << 40, "tib": 1 << 40, "tb": 10**12,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", re.IGNORECASE)


def parse_bytes(text: str) -> int:
    """Bytes in a size: KiB/MiB/GiB/TiB and bare K/M/G/T (as Slurm) are binary, KB/MB/GB/TB
    decimal, no unit or B is bytes; case-insensitive."""
    match = _SIZE.fullmatch(text)
    unit = match and _UNITS.get(match.group(2).lower())
    if not unit:
        raise ValueError(f"cannot read {text!r} as a size; write e.g. 80GiB, 80GB, 512MiB, 24G")
    return round(float(match.group(1)) * unit)


def format_bytes(n: int) -> str:
    """``n`` bytes in binary units, e.g. '80.0 GiB'."""
    exponent = 0
    while exponent < 4 and abs(n) >= 1024 ** (exponent + 1):
        exponent += 1
    if exponent == 0:
        return f"{n} B"
    return f"{n / 1024**exponent:.1f} {('KiB', 'MiB', 'GiB', 'TiB')[exponent - 1]}"
