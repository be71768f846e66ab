"""Pictures with their boxes and masks: an image brought to a tracker's size with its
annotations scaled with it (`annotated`), and a picture's layers drawn into pixels, true beside
predicted (`flattened`: what TensorBoard, MLflow and report.png show; W&B draws the layers
itself). PIL and numpy only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from launcher.data.encode.boxes import drawn
from launcher.data.encode.masks import overlay
from launcher.data.encode.media import THUMBNAIL, Box, Layer, Picture
from launcher.data.encode.preview import label_name

GAP = 4  # white pixels between two layers drawn side by side
CAPTION = 14  # height of the strip above each drawn layer that names it


def annotated(image: Image.Image, names: Sequence[str],
              boxes: Mapping[Layer, Sequence[Box]] | None = None,
              masks: Mapping[Layer, np.ndarray] | None = None) -> Picture:
    """`image` at most THUMBNAIL pixels a side; its boxes (in `image`'s pixels) scaled with it,
    its masks (class ids at `image`'s size) resized to it, nearest (no new class appears)."""
    small = image.copy()
    small.thumbnail((THUMBNAIL, THUMBNAIL))
    across, down = small.width / image.width, small.height / image.height
    return Picture(
        np.asarray(small),
        boxes={layer: tuple(Box((x0 * across, y0 * down, x1 * across, y1 * down), b.class_id,
                                b.score) for b in found for x0, y0, x1, y1 in [b.corners])
               for layer, found in (boxes or {}).items()},
        masks={layer: np.asarray(Image.fromarray(np.asarray(mask, dtype=np.uint8)).resize(
            small.size, Image.Resampling.NEAREST)) for layer, mask in (masks or {}).items()},
        class_names=tuple(names))


def flattened(picture: Picture) -> np.ndarray:
    """The pixels with each layer drawn on a copy (its mask tinted in VOC's colours, its boxes
    outlined and captioned with class and score), the copies side by side under their layer's
    name, true first; the pixels as they are when the picture has no layer."""
    layers = picture.layers
    if not layers:
        return picture.pixels
    image = Image.fromarray(picture.pixels)
    width, height = image.size
    out = Image.new("RGB", (len(layers) * (width + GAP) - GAP, height + CAPTION), "white")
    draw = ImageDraw.Draw(out)
    for number, layer in enumerate(layers):
        left = number * (width + GAP)
        out.paste(_drawn(image, picture, layer), (left, CAPTION))
        draw.text((left + 2, 1), layer.value, fill="black")
    return np.asarray(out)


def _drawn(image: Image.Image, picture: Picture, layer: Layer) -> Image.Image:
    """One layer of the picture: its mask tinted over the image, then its boxes."""
    mask = picture.masks.get(layer)
    tinted = overlay(image, mask, None) if mask is not None else image
    boxes = picture.boxes.get(layer, ())
    names = list(picture.class_names)
    return drawn(tinted, [list(b.corners) for b in boxes],
                 [label_name(names, b.class_id) + ("" if b.score is None else f" {b.score:.2f}")
                  for b in boxes], tinted.size)
