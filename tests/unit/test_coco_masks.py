"""COCO polygons as semantic segmentation masks: the real labelme COCO file of three VOC images
rasterised agrees with labelme2voc's own class PNGs of the same images; crowds are ignored; a
background class is added where the categories have none; bad annotations are named."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from launcher.data.coco_masks import BACKGROUND, IGNORE
from launcher.data.encode.masks import class_names_beside
from launcher.data.errors import DataError
from launcher.data.formats import load_rows
from tests.conftest import REPO

LABELME = REPO.parent / "shared" / "data" / "labelme-voc"
COCO = LABELME / "instance_coco" / "annotations.json"


def mask_of(row: dict) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(row["mask"])))


def copied(tmp_path: Path, change=lambda data: None) -> Path:
    """The labelme COCO folder copied, its annotations changed by `change`."""
    folder = shutil.copytree(COCO.parent, tmp_path / "coco")
    data = json.loads(COCO.read_text())
    change(data)
    (folder / "annotations.json").write_text(json.dumps(data))
    return folder / "annotations.json"


def test_rasterised_polygons_agree_with_labelme2vocs_masks() -> None:
    rows = load_rows([COCO], "segmentation").rows
    assert len(rows) == 3
    names = class_names_beside(str(COCO))
    assert names[0] == "_background_" and len(names) == 21 and names[15] == "person"
    for row in rows:
        ours = mask_of(row)
        voc = np.array(Image.open(LABELME / "semantic_voc" / "SegmentationClass" /
                                  f"{Path(row['image']).stem}.png"))
        assert ours.shape == voc.shape == Image.open(row["image"]).size[::-1]
        drawn = voc != IGNORE  # labelme2voc marks object borders 255
        assert set(np.unique(ours)) == set(np.unique(voc[drawn]))
        assert (ours[drawn] == voc[drawn]).mean() > 0.98


def test_crowds_are_ignored_and_a_background_is_added_when_missing(tmp_path: Path) -> None:
    def change(data: dict) -> None:
        data["categories"] = [dict(c, id=c["id"] + 100) for c in data["categories"][1:]]
        for ann in data["annotations"]:
            ann["category_id"] += 100
        data["annotations"][0]["iscrowd"] = 1

    path = copied(tmp_path, change)
    names = class_names_beside(str(path))
    assert names[0] == BACKGROUND and names[1:] == class_names_beside(str(COCO))[1:]
    plain, crowded = (load_rows([p], "segmentation").rows for p in (COCO, path))
    first = json.loads(COCO.read_text())["annotations"][0]["image_id"]
    before, after = mask_of(plain[first]), mask_of(crowded[first])
    assert (after == IGNORE).any() and not (before == IGNORE).any()
    assert (after[after != IGNORE] == before[after != IGNORE]).all()  # the same class ids


@pytest.mark.parametrize(("change", "said", "images"), [
    (lambda d: d["annotations"][2].update(image_id=99), "annotations.json:row 2: annotation 2 "
     "names no image: image_id 99 is not among the file's images", 3),
    (lambda d: d["annotations"][1].update(category_id=77), "annotations.json:row 1: annotation "
     "1: category_id 77 is not among the file's categories", 3),
    (lambda d: d["images"][1].update(file_name="JPEGImages/gone.jpg"), "annotations.json:row 1: "
     "image 'JPEGImages/gone.jpg' not found beside", 2),
])
def test_bad_annotations_are_named_or_skipped(tmp_path: Path, change, said: str,
                                              images: int) -> None:
    path = copied(tmp_path, lambda data: change(data))
    with pytest.raises(DataError, match=said.replace("(", r"\(").replace(")", r"\)")):
        load_rows([path], "segmentation")
    loaded = load_rows([path], "segmentation", on_bad_row="skip")
    assert len(loaded.skipped) == 1 and len(loaded.rows) == images
