"""What a tracker shows of an eval example: its picture or its sound (W&B media, TensorBoard
images and audio, MLflow artifacts); a picture may carry boxes and masks, true and predicted
(`Layer`), which W&B draws itself and `launcher.data.encode.annotated` draws into the pixels
for the others."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

THUMBNAIL = 256  # longest side of a picture sent to a tracker, in pixels
SOUND_SECONDS = 30  # the start of a longer recording is sent


class Layer(Enum):
    """Whose annotations of a picture: the data's (true) or the model's (predicted)."""

    TRUE = "true"
    PREDICTED = "predicted"


@dataclass(frozen=True)
class Box:
    """A box on a picture: corners (x0, y0, x1, y1) in the picture's pixels, a class id, and
    the model's score (predicted boxes)."""

    corners: tuple[float, float, float, float]
    class_id: int
    score: float | None = None


@dataclass(frozen=True)
class Picture:
    """RGB pixels, (height, width, 3) uint8; with, by layer, boxes and a mask of class ids
    ((height, width) uint8, `launcher.data.encode.masks.IGNORE` where no class is said), the
    classes named by `class_names`."""

    pixels: Any
    boxes: Mapping[Layer, tuple[Box, ...]] = field(default_factory=dict)
    masks: Mapping[Layer, Any] = field(default_factory=dict)
    class_names: tuple[str, ...] = ()

    @property
    def layers(self) -> list[Layer]:
        """The layers annotated, true first."""
        return [layer for layer in Layer if layer in self.boxes or layer in self.masks]


@dataclass(frozen=True)
class Sound:
    """Mono samples in [-1, 1] at `rate` Hz."""

    samples: Any
    rate: int


Media = Picture | Sound
