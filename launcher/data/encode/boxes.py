"""Augmentation that moves boxes with the pixels, and images with their boxes drawn.

`augment_boxes` draws exactly what `launcher.data.encode.images.augment` draws for the same
(settings, seed), in the same order from one ``numpy.random.Generator(PCG64(seed))``: the random
resized crop's box (`crop_box`), the flip coin, then the colour jitter (which moves nothing).
A box is cut to the crop; one left with less than `MIN_KEPT` of its area is dropped (its class
with it); the flip mirrors the boxes. PIL and numpy only: the image processor resizes after.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from launcher.data.encode.images import Augmentation, crop_box, jittered

MIN_KEPT = 0.25  # share of a box's area that must stay inside the crop for it to be kept
Box = list[float]  # [xmin, ymin, xmax, ymax] in pixels


def augment_boxes(image: Image.Image, boxes: list[Box], classes: list[int],
                  settings: Augmentation, seed: int
                  ) -> tuple[Image.Image, list[Box], list[int]]:
    """A new image and its boxes and classes, a pure function of the inputs and `seed`: the
    pixels are `images.augment`'s for the same seed; boxes cut to the crop (dropped below
    `MIN_KEPT` of their area) and mirrored with the flip."""
    rng = np.random.Generator(np.random.PCG64(seed))
    out, kept, labels = image, [list(map(float, b)) for b in boxes], list(classes)
    if settings.crop_scale is not None:
        left, top, right, bottom = crop_box(out.width, out.height, settings.crop_scale,
                                            settings.crop_ratio, rng)
        out = out.crop((left, top, right, bottom))
        kept, labels = _cut(kept, labels, (left, top, right, bottom))
    if settings.hflip and rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        kept = [[out.width - x1, y0, out.width - x0, y1] for x0, y0, x1, y1 in kept]
    out = jittered(out, settings.color_jitter, rng)
    return (out.copy() if out is image else out), kept, labels


def _cut(boxes: list[Box], classes: list[int], crop: tuple[int, int, int, int]
         ) -> tuple[list[Box], list[int]]:
    """The boxes clipped to `crop` (left, top, right, bottom) in its coordinates; those left
    with less than MIN_KEPT of their area dropped."""
    left, top, right, bottom = crop
    kept, labels = [], []
    for (x0, y0, x1, y1), label in zip(boxes, classes, strict=True):
        cx0, cy0, cx1, cy1 = max(x0, left), max(y0, top), min(x1, right), min(y1, bottom)
        area = (x1 - x0) * (y1 - y0)
        if cx1 > cx0 and cy1 > cy0 and (cx1 - cx0) * (cy1 - cy0) >= MIN_KEPT * area:
            kept.append([cx0 - left, cy0 - top, cx1 - left, cy1 - top])
            labels.append(label)
    return kept, labels


def drawn(image: Image.Image, boxes: list[Box], captions: list[str],
          cell: tuple[int, int]) -> Image.Image:
    """`image` fitted into `cell` (width, height), each box outlined in red and captioned."""
    out = ImageOps.contain(image, cell)
    scale = out.width / image.width
    draw = ImageDraw.Draw(out)
    for (x0, y0, x1, y1), caption in zip(boxes, captions, strict=True):
        draw.rectangle((x0 * scale, y0 * scale, x1 * scale, y1 * scale), outline=(255, 0, 0))
        draw.text((x0 * scale + 2, y0 * scale + 2), caption, fill=(255, 255, 0))
    return out
