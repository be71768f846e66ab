"""COCO JSON as semantic segmentation data: each image's polygons (or RLE masks) rasterised into
one class-id mask, torch-free (the control plane reads the data when it plans).

Class ids: the categories in id order; a category 0 (or one named background) is the
background, else "_background_" comes first and the categories follow. Pixels no annotation
covers are the background; crowd annotations (`iscrowd`) are 255 (ignored by the loss and the
metrics). Later, smaller objects are drawn over larger ones. A record is ``{"image": path,
"mask": PNG bytes}`` whose origin is the image's entry; an annotation of no listed image, an
image file that is missing and a category not listed are bad rows naming the annotation.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from launcher.data.errors import DataError, Origin

BACKGROUND = "_background_"
IGNORE = 255
COCO_KEYS = {"images", "annotations", "categories"}


def coco_document(text: str) -> dict[str, Any] | None:
    """The COCO document `text` holds (a JSON object with images, annotations and
    categories); None when it is anything else."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.keys() >= COCO_KEYS else None


def coco_names(data: dict[str, Any]) -> list[str]:
    """The class names of the masks: the categories in id order, the background first."""
    categories = sorted(data["categories"], key=lambda c: c["id"])
    names = [str(c["name"]) for c in categories]
    first = categories[0] if categories else None
    has_background = first is not None and (first["id"] == 0 or
                                            str(first["name"]).lower().strip("_") == "background")
    return names if has_background else [BACKGROUND, *names]


def coco_mask_records(path: str, data: dict[str, Any]
                      ) -> Iterator[tuple[dict[str, Any], Origin] | DataError]:
    """Each image of the COCO file `path` with its rasterised mask and where it is listed, in
    the file's image order; the bad rows as DataErrors."""
    names = coco_names(data)
    offset = len(names) - len(data["categories"])  # 1 when the background was added
    class_of = {c["id"]: index + offset for index, c in
                enumerate(sorted(data["categories"], key=lambda c: c["id"]))}
    images = {image["id"]: (index, image) for index, image in enumerate(data["images"])}
    drawn: dict[Any, list[dict[str, Any]]] = {key: [] for key in images}
    for row, ann in enumerate(data["annotations"]):
        where = Origin(path, row, "row")
        if ann.get("image_id") not in images:
            yield DataError(where, f"annotation {ann.get('id')} names no image: image_id "
                            f"{ann.get('image_id')!r} is not among the file's images")
        elif ann.get("category_id") not in class_of:
            yield DataError(where, f"annotation {ann.get('id')}: category_id "
                            f"{ann.get('category_id')!r} is not among the file's categories")
        else:
            drawn[ann["image_id"]].append(ann)
    folder = Path(path).parent
    for key, (index, image) in images.items():
        where = Origin(path, index, "row")
        file = folder / image["file_name"]
        if not file.is_file():
            yield DataError(where, f"image {image['file_name']!r} not found beside {path}")
            continue
        mask = _rasterised(drawn[key], class_of, int(image["height"]), int(image["width"]))
        yield {"image": str(file), "mask": _png(mask)}, where


def _rasterised(annotations: list[dict[str, Any]], class_of: dict[Any, int], height: int,
                width: int) -> np.ndarray:
    from pycocotools import mask as coco_mask

    mask = np.zeros((height, width), dtype=np.uint8)
    for ann in sorted(annotations, key=lambda a: -float(a.get("area") or 0)):
        segmentation = ann["segmentation"]
        rles = (coco_mask.frPyObjects(segmentation, height, width)
                if isinstance(segmentation, list) else
                coco_mask.frPyObjects(segmentation, height, width)
                if isinstance(segmentation.get("counts"), list) else segmentation)
        with warnings.catch_warnings():  # pycocotools' decode under numpy 2 (harmless)
            warnings.simplefilter("ignore", DeprecationWarning)
            covered = coco_mask.decode(coco_mask.merge(rles) if isinstance(rles, list)
                                       else rles)
        mask[covered.astype(bool)] = IGNORE if ann.get("iscrowd") else class_of[
            ann["category_id"]]
    return mask


def _png(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(mask, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()
