"""The task's COCO scores are pycocotools' own: fixed detections scored through the task's
metric code and through a COCOeval built here from COCO files on disk give the same mAP,
mAP@50, mAP@75 and per-class AP."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from launcher.tasks.box_metrics import coco_scores

NAMES = ["raccoon", "badger", "fox"]


def scene(seed: int = 0, images: int = 12) -> tuple[list[list[dict]], list[list[dict]]]:
    """True boxes per image (some images have none) and detections around them: jittered,
    some missing, some false, scores random."""
    rng = np.random.default_rng(seed)
    truth, found = [], []
    for image in range(images):
        boxes = []
        for _ in range(0 if image % 5 == 4 else int(rng.integers(1, 4))):
            x, y = rng.uniform(0, 300, 2)
            boxes.append({"category_id": int(rng.integers(0, 3)),
                          "bbox": [round(x, 2), round(y, 2), *rng.uniform(20, 150, 2).round(2)]})
        truth.append(boxes)
        detections = []
        for box in boxes:
            if rng.random() < 0.8:
                jitter = rng.normal(0, 6, 4)
                detections.append({"category_id": box["category_id"], "label": "x",
                                   "bbox": [round(float(v), 2) for v in
                                            np.array(box["bbox"]) + jitter],
                                   "score": round(float(rng.random()), 4)})
        for _ in range(int(rng.integers(0, 3))):
            detections.append({"category_id": int(rng.integers(0, 3)), "label": "x",
                               "bbox": [float(v) for v in rng.uniform(10, 200, 4).round(2)],
                               "score": round(float(rng.random()), 4)})
        found.append(detections)
    return found, truth


def reference_cocoeval(found: list[list[dict]], truth: list[list[dict]],
                       tmp_path: Path) -> tuple[list[float], dict[str, float]]:
    """COCOeval on a ground-truth file written as COCO writes one (ids from 1)."""
    from pycocotools.coco import COCO

    annotations, n = [], 0
    for image, boxes in enumerate(truth):
        for box in boxes:
            n += 1
            annotations.append({"id": n, "image_id": image + 1, "iscrowd": 0,
                                "category_id": box["category_id"] + 1, "bbox": box["bbox"],
                                "area": box["bbox"][2] * box["bbox"][3]})
    (tmp_path / "gt.json").write_text(json.dumps({
        "images": [{"id": i + 1, "width": 640, "height": 480} for i in range(len(truth))],
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": name} for k, name in enumerate(NAMES)]}))
    results = [{"image_id": image + 1, "category_id": d["category_id"] + 1, "bbox": d["bbox"],
                "score": d["score"]} for image, per in enumerate(found) for d in per]
    (tmp_path / "dt.json").write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tmp_path / "gt.json"))
    overall = evaluated(gt, tmp_path, None)
    per_class = {name: evaluated(gt, tmp_path, k + 1)[0] for k, name in enumerate(NAMES)}
    return overall, per_class


def evaluated(gt: object, tmp_path: Path, category: int | None) -> list[float]:
    """mAP, mAP@50, mAP@75 of dt.json, over every category or `category` alone."""
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(gt, gt.loadRes(str(tmp_path / "dt.json")), "bbox")
        if category is not None:
            evaluation.params.catIds = [category]
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return [float(s) for s in evaluation.stats[:3]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_equal_an_independent_cocoeval(seed: int, tmp_path: Path) -> None:
    found, truth = scene(seed)
    ours = coco_scores(found, truth, NAMES)
    (overall, per_class) = reference_cocoeval(found, truth, tmp_path)
    assert [ours["map"], ours["map_50"], ours["map_75"]] == pytest.approx(overall, abs=1e-12)
    assert 0.05 < ours["map"] < 0.95  # neither empty nor perfect: the comparison means something
    assert {name: s["ap"] for name, s in ours["per_class"].items()} == pytest.approx(
        {name: ap for name, ap in per_class.items() if ap >= 0}, abs=1e-12)


def test_perfect_detections_score_one_and_none_score_zero() -> None:
    _, truth = scene(3)
    perfect = [[{**box, "score": 1.0} for box in boxes] for boxes in truth]
    assert coco_scores(perfect, truth, NAMES)["map"] == pytest.approx(1.0)
    assert coco_scores([[] for _ in truth], truth, NAMES)["map"] == 0.0
