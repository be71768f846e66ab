"""Boxes move with the pixels: for 100 seeded augmentations of real raccoon rows, the region of
one box painted in a colour the photo lacks is exactly the augmented box (crop and flip do not
resample), or mostly cropped away when the box is dropped; through the image processor (resize,
pad) the normalised boxes still land on the painted region within 2 pixels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from launcher.data.encode.boxes import MIN_KEPT, augment_boxes
from launcher.data.encode.images import Augmentation, augment, augmentation_seed
from launcher.data.formats import load_rows
from tests.helpers.image_folders import RACCOON

PAINT = np.array([1, 254, 3], dtype=np.uint8)
SETTINGS = Augmentation(crop_scale=(0.2, 1.0), hflip=True, color_jitter=0.0)
TRIALS = 100


def painted(row: dict, which: int) -> tuple[Image.Image, list[float]]:
    """The row's image with box `which` filled with PAINT, and that box."""
    pixels = np.asarray(Image.open(row["image"]).convert("RGB")).copy()
    assert not (pixels == PAINT).all(-1).any()  # the colour marks the box alone
    x0, y0, x1, y1 = (round(v) for v in row["boxes"][which])
    pixels[y0:y1, x0:x1] = PAINT
    return Image.fromarray(pixels), [x0, y0, x1, y1]


def region(pixels: np.ndarray, near: float = 0.0) -> tuple[list[float] | None, int]:
    """The box around the pixels of PAINT's colour (within `near` per channel), and how many."""
    hit = (np.abs(pixels.astype(np.float32) - PAINT).max(-1) <= near)
    if not hit.any():
        return None, 0
    ys, xs = np.nonzero(hit)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], int(hit.sum())


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return load_rows([RACCOON / "train_labels.csv"], "detection").rows[:TRIALS]


def test_every_augmented_box_covers_its_painted_pixels(rows: list[dict]) -> None:
    dropped = 0
    for trial in range(TRIALS):
        row = rows[trial % len(rows)]
        which = trial % len(row["boxes"])
        image, box = painted(row, which)
        seed = augmentation_seed(7, 0, trial)
        out, boxes, classes = augment_boxes(image, [box], [0], SETTINGS, seed)
        assert out.tobytes() == augment(image, SETTINGS, seed).tobytes()  # the same draws
        found, count = region(np.asarray(out))
        if not boxes:  # dropped: less than MIN_KEPT of the box is left in the crop
            dropped += 1
            assert count < MIN_KEPT * (box[2] - box[0]) * (box[3] - box[1]), trial
            continue
        assert classes == [0] and found is not None, trial
        assert np.allclose(found, boxes[0], atol=1), (trial, found, boxes[0])
    assert 0 < dropped < TRIALS // 2  # both branches were exercised


def test_the_same_seed_gives_the_same_boxes(rows: list[dict]) -> None:
    image = Image.open(rows[3]["image"]).convert("RGB")
    settings = Augmentation()
    first = augment_boxes(image, rows[3]["boxes"], rows[3]["label"], settings, 11)
    again = augment_boxes(image, rows[3]["boxes"], rows[3]["label"], settings, 11)
    assert first[0].tobytes() == again[0].tobytes() and first[1:] == again[1:]


def test_the_processor_normalises_boxes_onto_the_painted_pixels(rows: list[dict]) -> None:
    """DETR's processor (resize to 64-96 px, pad to the batch's largest): the label's cx, cy, w,
    h times the padded canvas are the painted region's edges, to 2 pixels of resampling."""
    from transformers.models.detr.image_processing_pil_detr import DetrImageProcessorPil

    processor = DetrImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 96})
    images, annotations = [], []
    for trial in range(8):
        row = rows[trial]
        image, box = painted(row, 0)
        out, boxes, _ = augment_boxes(image, [box], [0], SETTINGS, augmentation_seed(3, 0, trial))
        images.append(out)
        annotations.append({"image_id": trial, "annotations": [
            {"bbox": [x0, y0, x1 - x0, y1 - y0], "category_id": 0, "area": 1.0, "iscrowd": 0}
            for x0, y0, x1, y1 in boxes]})
    batch = processor(images=images, annotations=annotations, return_tensors="pt")
    mean, std = np.array(processor.image_mean), np.array(processor.image_std)
    checked = 0
    for pixels, target in zip(batch["pixel_values"].numpy(), batch["labels"], strict=True):
        if not len(target["boxes"]):
            continue
        rgb = (pixels.transpose(1, 2, 0) * std + mean) * 255
        found, _ = region(rgb, near=40)  # edge pixels blend with the photo
        height, width = rgb.shape[:2]
        cx, cy, w, h = target["boxes"][0].tolist()
        expected = [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width,
                    (cy + h / 2) * height]
        assert np.allclose(found, expected, atol=2), (found, expected)
        checked += 1
    assert checked >= 6
