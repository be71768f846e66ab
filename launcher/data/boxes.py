"""Object-detection annotations read into one canonical row per image (no torch here).

A row is ``{"image": absolute path, "boxes": [[xmin, ymin, xmax, ymax], ...] (pixels of the
upright image), "label": [class name or id, ...]}``; label names become ids through a
`LabelMap` (built from these rows, or the training rows' for eval rows). Three sources:

- a folder of Pascal VOC XML files (or a folder holding ``Annotations/`` or ``annotations/``),
  one file per image: ``<filename>``, ``<object><name>`` and ``<bndbox>``; the image is looked
  for beside the XML file, in its ``<folder>``, ``images/`` or ``JPEGImages/`` beside it;
- a table with one box per row (csv, tsv, jsonl, a JSON array, parquet): columns ``filename``
  (or ``image``, ``file_name``, ``path``), ``xmin``, ``ymin``, ``xmax``, ``ymax`` and ``class``
  (or ``label``, ``category``, ``name``), in any order (``data.columns`` renames them); the
  image is looked for beside the table, in ``images/`` or ``JPEGImages/`` beside it;
- a COCO JSON file (``images``, ``annotations``, ``categories``): ``bbox`` as [x, y, w, h]
  (a polygon's box when ``bbox`` is absent); class names from ``categories``.

Boxes up to `EDGE_SLACK` pixels outside the image are clipped (VOC counts from 1); any other
bad box, an unknown class, a missing image or an annotation of no image is a `DataError`
naming the file and row (under ``on_bad_row = "skip"`` the whole image is skipped, or the
annotation alone when it names no image). Rows without labels (to predict) come from a folder
of images, or any of the sources with boxes left out.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.data.errors import BadRowPolicy, DataError, Origin, handle_bad_row
from launcher.data.files import IMAGE_SUFFIXES, describe, read_records
from launcher.data.labels import LabelMap

EDGE_SLACK = 2.0  # pixels a box may reach past the image's edge (clipped)
ALIASES = {"image": ("filename", "image", "file_name", "path"),
           "label": ("class", "label", "category", "name")}
BESIDE = ("", "images", "JPEGImages")  # where an annotation's image is looked for


@dataclass
class Annotated:
    """One image's boxes as read, and where each came from."""

    name: str  # as the annotation names it
    path: Path | None  # where it was found
    origin: Origin
    boxes: list[list[float]] = field(default_factory=list)
    classes: list[str | int] = field(default_factory=list)
    origins: list[Origin] = field(default_factory=list)
    error: DataError | None = None  # its first bad box: the whole image is refused or skipped

    def add(self, read: Callable[[], tuple[list[float], str | int]], where: Origin) -> None:
        """One box and its class, as `read` returns them; a `DataError` marks the image."""
        if self.error is not None:
            return
        try:
            box, label = read()
        except DataError as err:
            self.error = err
            return
        self.boxes.append(box)
        self.classes.append(label)
        self.origins.append(where)


def read_boxes(paths: list[str | Path], columns: Mapping[str, str], on_bad_row: BadRowPolicy,
               label_map: LabelMap | None, labelled: bool
               ) -> tuple[list[dict[str, Any]], list[DataError], LabelMap | None]:
    """Canonical rows of every file of `paths`, the bad ones skipped, and the label map."""
    skipped: list[DataError] = []
    images: list[Annotated] = []
    for path in map(Path, paths):
        if not labelled and path.is_dir() and not _xml_files(path):
            images += [Annotated(file.name, file.resolve(), Origin(str(file), 0, "file"))
                       for file in sorted(path.iterdir())
                       if file.suffix.lower() in IMAGE_SUFFIXES and not file.name.startswith(".")]
            continue
        images += _read(path, columns, on_bad_row, skipped)
    names = label_map
    if labelled and names is None and any(image.classes for image in images):
        names = LabelMap.build(c for image in images for c in image.classes)
    rows = []
    for image in images:
        try:
            rows.append(_checked(image, names) if labelled else {"image": str(_found(image))})
        except DataError as err:
            handle_bad_row(err, on_bad_row, skipped)
    return rows, skipped, names


def _read(path: Path, columns: Mapping[str, str], on_bad_row: BadRowPolicy,
          skipped: list[DataError]) -> list[Annotated]:
    if path.is_dir() or path.suffix.lower() == ".xml":
        files = _xml_files(path) if path.is_dir() else [path]
        if not files:
            raise ValueError(f"{path}: a folder without Pascal VOC .xml files (nor an "
                             "Annotations/ folder of them)")
        images = []
        for file in files:
            try:
                images.append(_voc(file))
            except DataError as err:
                handle_bad_row(err, on_bad_row, skipped)
        return images
    if path.suffix.lower() == ".json" and _is_coco(path):
        return _coco(path, on_bad_row, skipped)
    return _table(path, columns, on_bad_row, skipped)


def _xml_files(folder: Path) -> list[Path]:
    for where in (folder, folder / "Annotations", folder / "annotations"):
        if where.is_dir() and (found := sorted(where.glob("*.xml"))):
            return found
    return []


def _find(name: str, folder: Path, extra: tuple[str, ...] = ()) -> Path | None:
    """The image `name` beside `folder`'s annotations (None: not found)."""
    for sub in (*extra, *BESIDE):
        for base in (folder, folder.parent):
            if (candidate := base / sub / name).is_file():
                return candidate.resolve()
    return None


def _voc(file: Path) -> Annotated:
    origin = Origin(str(file), 0, "file")
    try:
        root = ElementTree.parse(file).getroot()
    except ElementTree.ParseError as err:
        raise DataError(origin, f"not a Pascal VOC XML file ({err})") from None
    name = (root.findtext("filename") or "").strip()
    if not name:
        raise DataError(origin, "no <filename>: the XML does not name its image")
    folder = (root.findtext("folder") or "").strip()
    image = Annotated(name, _find(name, file.parent, (folder,)), origin)
    for number, obj in enumerate(root.iter("object"), 1):
        where = Origin(str(file), number, "row")
        box = obj.find("bndbox")
        values = [box.findtext(k) if box is not None else None
                  for k in ("xmin", "ymin", "xmax", "ymax")]
        image.add(lambda values=values, obj=obj, where=where: (
            _numbers(values, where, "object"), (obj.findtext("name") or "").strip()), where)
    return image


def _is_coco(path: Path) -> bool:
    """A JSON object (not rows) that names its images: COCO's layout."""
    text = path.read_bytes()
    return text.lstrip().startswith(b"{") and b'"images"' in text


def _coco(path: Path, on_bad_row: BadRowPolicy, skipped: list[DataError]) -> list[Annotated]:
    origin = Origin(str(path), 0, "file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        categories = {c["id"]: str(c["name"]) for c in data.get("categories", [])}
        images = {entry["id"]: Annotated(entry["file_name"],
                                         _find(entry["file_name"], path.parent),
                                         Origin(str(path), index, "row"))
                  for index, entry in enumerate(data["images"])}
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(origin, f"not a COCO file with images and categories ({err})") from None
    for index, ann in enumerate(data.get("annotations", [])):
        where = Origin(str(path), index, "row")
        if not isinstance(ann, dict) or ann.get("image_id") not in images:
            handle_bad_row(DataError(where, f"annotation {describe(ann)} names no image of the "
                                     f"file's images (ids {sorted(images)[:10]}...)"),
                           on_bad_row, skipped)
            continue
        images[ann["image_id"]].add(lambda ann=ann, where=where: (
            _coco_box(ann, where), _category(ann, categories, where)), where)
    return list(images.values())


def _category(ann: dict[str, Any], categories: dict[Any, str], where: Origin) -> str:
    if ann.get("category_id") not in categories:
        raise DataError(where, f"category_id {ann.get('category_id')!r} is not one of the "
                        f"categories {sorted(categories)}")
    return categories[ann["category_id"]]


def _coco_box(ann: dict[str, Any], where: Origin) -> list[float]:
    """[xmin, ymin, xmax, ymax] of `bbox` ([x, y, w, h]), else of its polygons' points."""
    if ann.get("bbox") is not None:
        box = ann["bbox"]
        if not isinstance(box, list) or len(box) != 4:
            raise DataError(where, f"bbox must be [x, y, w, h], got {describe(box)}")
        x, y, w, h = _numbers(box, where, "bbox [x, y, w, h]")
        return [x, y, x + w, y + h]
    polygons = ann.get("segmentation")
    points = ([v for polygon in polygons if isinstance(polygon, list) for v in polygon]
              if isinstance(polygons, list) else [])
    if not points:
        raise DataError(where, "an annotation with neither bbox nor polygons")
    xs, ys = _numbers(points[0::2], where, "polygon"), _numbers(points[1::2], where, "polygon")
    return [min(xs), min(ys), max(xs), max(ys)]


def _table(path: Path, columns: Mapping[str, str], on_bad_row: BadRowPolicy,
           skipped: list[DataError]) -> list[Annotated]:
    result = read_records(path, None, on_bad_row)
    skipped.extend(result.skipped)
    images: dict[str, Annotated] = {}
    for record in result.records:
        try:
            name = str(_field(record.data, "image", columns, record.origin))
            image = images.get(name)
            if image is None:
                image = images[name] = Annotated(name, _find(name, path.parent), record.origin)
        except DataError as err:  # no image named: the row alone is refused or skipped
            handle_bad_row(err, on_bad_row, skipped)
            continue
        image.add(lambda data=record.data, where=record.origin: (
            _numbers([_field(data, k, columns, where) for k in ("xmin", "ymin", "xmax", "ymax")],
                     where, "box"), _field(data, "label", columns, where)), record.origin)
    return list(images.values())


def _field(data: dict[str, Any], name: str, columns: Mapping[str, str], origin: Origin) -> Any:
    candidates = (columns[name],) if name in columns else ALIASES.get(name, (name,))
    for column in candidates:
        if data.get(column) not in (None, ""):
            return data[column]
    raise DataError(origin, f"no {' or '.join(map(repr, candidates))} column in "
                    f"{describe(data)}")


def _numbers(values: list[Any], where: Origin, what: str) -> list[float]:
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise DataError(where, f"{what}: expected numbers, got {describe(values)}") from None


def _found(image: Annotated) -> Path:
    """Where the image is; a `DataError` when it is not there."""
    if image.path is None:
        raise DataError(image.origin, f"annotation for a missing image {image.name}: no such "
                        "file beside the annotations (nor in images/ or JPEGImages/ there)")
    return image.path


def _checked(image: Annotated, names: LabelMap | None) -> dict[str, Any]:
    """The canonical row: the image found, each box inside it (clipped within EDGE_SLACK) with
    xmin < xmax and ymin < ymax, each class a label of `names`; its first bad box raised."""
    if image.error is not None:
        raise image.error
    path = _found(image)
    width, height = image_size(path)
    boxes, labels = [], []
    for box, label, where in zip(image.boxes, image.classes, image.origins, strict=True):
        x0, y0, x1, y1 = box
        if not (x0 < x1 and y0 < y1):
            raise DataError(where, f"box {box}: xmax must exceed xmin and ymax ymin")
        if min(x0, y0) < -EDGE_SLACK or x1 > width + EDGE_SLACK or y1 > height + EDGE_SLACK:
            raise DataError(where, f"box {box} lies outside the {width}x{height} image "
                            f"{path.name}")
        boxes.append([max(x0, 0.0), max(y0, 0.0), min(x1, width), min(y1, height)])
        try:
            labels.append(names.id_of(label) if names is not None else label)
        except KeyError as err:
            raise DataError(where, err.args[0]) from None
    return {"image": str(image.path), "boxes": boxes, "label": labels}


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of the upright image (EXIF orientation applied), from its header."""
    from PIL import Image

    try:
        with Image.open(path) as opened:
            width, height = opened.size
            turned = opened.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except Exception as err:
        raise DataError(Origin(str(path), 0, "file"), f"not a readable image ({err})") from None
    return (height, width) if turned else (width, height)
