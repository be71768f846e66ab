"""COCO detection scores of an evaluation: mAP (IoU 0.50:0.95), mAP@50, mAP@75 and each class's
AP, computed by pycocotools' `COCOeval` (the reference implementation) from every image's
detections and true boxes, all in original-image pixels."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np

Detection = dict[str, Any]  # {"category_id": int, "bbox": [x, y, w, h], "score": float, ...}


def coco_scores(predictions: list[list[Detection]], references: list[list[Detection]],
                names: list[str]) -> dict[str, Any]:
    """`map`, `map_50`, `map_75` and `per_class` (name -> {"ap", "ap_50"}) of the detections
    `predictions[i]` against the true boxes `references[i]` of image i (the category ids are
    label ids, named by `names`); 0 for everything when no image has a true box."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    truth = [{"id": n, "image_id": i, "category_id": box["category_id"], "bbox": box["bbox"],
              "area": box["bbox"][2] * box["bbox"][3], "iscrowd": 0}
             for n, (i, box) in enumerate(((i, b) for i, boxes in enumerate(references)
                                           for b in boxes), 1)]
    found = [{"image_id": i, "category_id": d["category_id"], "bbox": d["bbox"],
              "score": d["score"]} for i, per in enumerate(predictions) for d in per]
    zero = {"map": 0.0, "map_50": 0.0, "map_75": 0.0}
    if not truth or not found:
        return {**zero, "per_class": {}}
    gt = COCO()
    gt.dataset = {"images": [{"id": i} for i in range(len(references))], "annotations": truth,
                  "categories": [{"id": k, "name": name} for k, name in enumerate(names)]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it goes
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(found), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = [max(float(s), 0.0) for s in evaluation.stats[:3]]  # -1: nothing to score
    return {"map": stats[0], "map_50": stats[1], "map_75": stats[2],
            "per_class": _per_class(evaluation, names)}


def _per_class(evaluation: Any, names: list[str]) -> dict[str, dict[str, float]]:
    """Each class's AP over IoU 0.50:0.95 and at 0.50 (all areas, 100 detections), as
    `summarize` averages them; classes without a true box left out."""
    precision = evaluation.eval["precision"]  # [IoU, recall, class, area, max detections]
    scores = {}
    for k, category in enumerate(evaluation.params.catIds):
        every, at_50 = precision[:, :, k, 0, -1], precision[0, :, k, 0, -1]
        if (every > -1).any():
            scores[names[category]] = {"ap": float(np.mean(every[every > -1])),
                                       "ap_50": float(np.mean(at_50[at_50 > -1]))}
    return scores
