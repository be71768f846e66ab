"""Image folders for the image tests, cut from the real ants-vs-bees photos in shared/."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import REPO

HYMENOPTERA = REPO.parent / "shared" / "data" / "hymenoptera" / "train"


def copy_images(source: Path, out: Path, start: int, count: int) -> Path:
    """`count` images of each class of `source`, from the `start`-th, as an image folder."""
    for label in ("ants", "bees"):
        (out / label).mkdir(parents=True)
        for image in sorted((source / label).iterdir())[start:start + count]:
            shutil.copy(image, out / label / image.name)
    return out
RACCOON = REPO.parent / "shared" / "data" / "raccoon"  # images/, annotations/ (VOC), a CSV
