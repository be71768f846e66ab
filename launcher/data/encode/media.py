"""What a tracker shows of an eval example: its picture or its sound (W&B media, TensorBoard
images and audio, MLflow artifacts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

THUMBNAIL = 256  # longest side of a picture sent to a tracker, in pixels
SOUND_SECONDS = 30  # the start of a longer recording is sent


@dataclass(frozen=True)
class Picture:
    """RGB pixels, (height, width, 3) uint8."""

    pixels: Any


@dataclass(frozen=True)
class Sound:
    """Mono samples in [-1, 1] at `rate` Hz."""

    samples: Any
    rate: int


Media = Picture | Sound
