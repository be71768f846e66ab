"""Where sft-launch caches what runs share (preprocessed data, model probes): one folder."""

from __future__ import annotations

import os
from pathlib import Path


def cache_base() -> Path:
    """`$SFT_LAUNCH_CACHE`, else ~/.cache/sft-launch (must be shared by all nodes to share)."""
    return Path(os.environ.get("SFT_LAUNCH_CACHE") or Path.home() / ".cache" / "sft-launch")
