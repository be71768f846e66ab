"""Object-detection rows from the real raccoon set (Pascal VOC XML and its CSV export) and the
labelme COCO file; each kind of bad annotation is one error naming the file and row, or a
counted skip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from launcher.data.errors import DataError
from launcher.data.formats import load_rows
from tests.conftest import REPO
from tests.helpers.image_folders import RACCOON

COCO = REPO.parent / "shared" / "data" / "labelme-voc" / "instance_coco" / "annotations.json"
HEADER = "filename,width,height,class,xmin,ymin,xmax,ymax\n"


def test_voc_xml_and_the_csv_export_give_the_same_rows() -> None:
    voc = load_rows([RACCOON / "annotations"], "detection")
    table = load_rows([RACCOON / "train_labels.csv"], "detection")
    assert voc.label_map.names == table.label_map.names == ("raccoon",)
    assert len(voc.rows) == len(table.rows) == 160 and not voc.skipped
    assert sum(len(r["boxes"]) for r in voc.rows) == 173
    by_image = {r["image"]: r for r in table.rows}
    for row in voc.rows:
        assert sorted(by_image[row["image"]]["boxes"]) == sorted(row["boxes"]), row["image"]
    first = next(r for r in voc.rows if r["image"].endswith("/raccoon-1.jpg"))
    assert first == {"image": str((RACCOON / "images" / "raccoon-1.jpg").resolve()),
                     "boxes": [[81.0, 88.0, 522.0, 408.0]], "label": [0]}


def test_a_box_table_takes_its_columns_in_any_order(tmp_path: Path) -> None:
    shutil.copy(RACCOON / "images" / "raccoon-1.jpg", tmp_path / "a.jpg")
    (tmp_path / "boxes.jsonl").write_text(json.dumps(
        {"class": "raccoon", "ymax": 408, "xmax": 522, "filename": "a.jpg", "xmin": 81,
         "ymin": 88}) + "\n")
    rows = load_rows([tmp_path / "boxes.jsonl"], "detection").rows
    assert rows == [{"image": str(tmp_path / "a.jpg"), "boxes": [[81.0, 88.0, 522.0, 408.0]],
                     "label": [0]}]


def test_coco_json_categories_become_contiguous_label_ids() -> None:
    loaded = load_rows([COCO], "detection")
    data = json.loads(COCO.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    used = sorted({names[a["category_id"]] for a in data["annotations"]})
    assert loaded.label_map.names == tuple(used)  # ids 0..N-1 over the classes present
    assert len(loaded.rows) == len(data["images"])
    first = [a for a in data["annotations"] if a["image_id"] == data["images"][0]["id"]]
    x, y, w, h = first[0]["bbox"]
    assert loaded.rows[0]["boxes"][0] == [x, y, x + w, y + h]
    assert loaded.rows[0]["label"][0] == used.index(names[first[0]["category_id"]])


def test_coco_polygons_give_their_box(tmp_path: Path) -> None:
    data = json.loads(COCO.read_text())
    polygon = data["annotations"][0]["segmentation"][0]
    for annotation in data["annotations"]:
        del annotation["bbox"]
    shutil.copytree(COCO.parent / "JPEGImages", tmp_path / "JPEGImages")
    (tmp_path / "coco.json").write_text(json.dumps(data))
    box = load_rows([tmp_path / "coco.json"], "detection").rows[0]["boxes"][0]
    assert box == [min(polygon[0::2]), min(polygon[1::2]), max(polygon[0::2]),
                   max(polygon[1::2])]


def test_a_folder_of_images_gives_rows_to_predict() -> None:
    rows = load_rows([RACCOON / "images"], "detection", labelled=False).rows
    assert len(rows) == 160 and set(rows[0]) == {"image"}


def table(tmp_path: Path, *lines: str) -> Path:
    """A CSV export beside a copy of raccoon-1.jpg (650x417) as images/a.jpg."""
    (tmp_path / "images").mkdir(exist_ok=True)
    shutil.copy(RACCOON / "images" / "raccoon-1.jpg", tmp_path / "images" / "a.jpg")
    path = tmp_path / "labels.csv"
    path.write_text(HEADER + "".join(f"{line}\n" for line in lines))
    return path


@pytest.mark.parametrize(("line", "message"), [
    ("a.jpg,650,417,raccoon,81,88,700,408", "box [81.0, 88.0, 700.0, 408.0] lies outside the "
     "650x417 image a.jpg"),
    ("a.jpg,650,417,raccoon,522,88,81,408", "box [522.0, 88.0, 81.0, 408.0]: xmax must exceed "
     "xmin"),
    ("gone.jpg,650,417,raccoon,81,88,522,408", "annotation for a missing image gone.jpg"),
])
def test_a_bad_box_is_named_by_file_and_line_or_skipped(tmp_path: Path, line: str,
                                                        message: str) -> None:
    path = table(tmp_path, "a.jpg,650,417,raccoon,1,1,20,20", line)
    with pytest.raises(DataError) as err:
        load_rows([path], "detection")
    assert str(err.value).startswith(f"{path}:3: {message}"), str(err.value)
    loaded = load_rows([path], "detection", on_bad_row="skip")
    assert len(loaded.skipped) == 1 and len(loaded.rows) == (1 if "gone" in line else 0)


def test_a_box_on_the_edge_is_clipped(tmp_path: Path) -> None:
    path = table(tmp_path, "a.jpg,650,417,raccoon,-1,0,651,417")
    assert load_rows([path], "detection").rows[0]["boxes"] == [[0.0, 0.0, 650.0, 417.0]]


def test_an_eval_class_not_in_the_training_labels_is_named(tmp_path: Path) -> None:
    names = load_rows([table(tmp_path, "a.jpg,650,417,raccoon,1,1,20,20")],
                      "detection").label_map
    path = table(tmp_path, "a.jpg,650,417,raccoon,1,1,20,20", "a.jpg,650,417,badger,1,1,20,20")
    with pytest.raises(DataError, match=rf"^{path}:3: label 'badger' is not one of the labels "
                       r"\['raccoon'\]"):
        load_rows([path], "detection", label_map=names)


def test_a_voc_file_names_its_bad_object(tmp_path: Path) -> None:
    (tmp_path / "annotations").mkdir()
    shutil.copytree(RACCOON / "images", tmp_path / "images")
    xml = (RACCOON / "annotations" / "raccoon-1.xml").read_text()
    (tmp_path / "annotations" / "raccoon-1.xml").write_text(
        xml.replace("<xmax>522</xmax>", "<xmax>50</xmax>"))
    with pytest.raises(DataError, match=r"raccoon-1\.xml:row 1: box .* xmax must exceed xmin"):
        load_rows([tmp_path / "annotations"], "detection")


def test_a_coco_annotation_of_no_image_is_named(tmp_path: Path) -> None:
    data = json.loads(COCO.read_text())
    data["annotations"][2]["image_id"] = 99
    shutil.copytree(COCO.parent / "JPEGImages", tmp_path / "JPEGImages")
    (tmp_path / "coco.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=rf"^{tmp_path / 'coco.json'}:row 2: annotation .* "
                       r"names no image of the file's images"):
        load_rows([tmp_path / "coco.json"], "detection")


def test_under_skip_a_bad_box_drops_its_whole_image(tmp_path: Path) -> None:
    """An image with one bad box is not trained on with its other boxes alone (that would
    teach the model its object is background)."""
    path = table(tmp_path, "a.jpg,650,417,raccoon,1,1,20,20", "a.jpg,650,417,raccoon,x,1,20,20",
                 "b.jpg,650,417,raccoon,1,1,20,20")
    shutil.copy(tmp_path / "images" / "a.jpg", tmp_path / "images" / "b.jpg")
    with pytest.raises(DataError, match=rf"^{path}:3: box: expected numbers"):
        load_rows([path], "detection")
    loaded = load_rows([path], "detection", on_bad_row="skip")
    assert [Path(r["image"]).name for r in loaded.rows] == ["b.jpg"]
    assert len(loaded.skipped) == 1


def test_rows_to_predict_name_a_missing_image(tmp_path: Path) -> None:
    path = table(tmp_path, "gone.jpg,650,417,raccoon,1,1,20,20")
    with pytest.raises(DataError, match=rf"^{path}:2: annotation for a missing image gone.jpg"):
        load_rows([path], "detection", labelled=False)
