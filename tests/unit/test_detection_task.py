"""The object-detection task on tiny random-init DETR (a pixel mask) and YOLOS (none): what the
model takes of a batch, a finite loss per image, and true boxes that come back from the
processor's normalised, padded form to the annotation's pixels whatever the batch's padding;
`preview` text and contact sheet with the augmented boxes drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from launcher.contract.reports import DataStats
from launcher.data.formats import load_rows
from launcher.tasks.base import EncodedData, build_task, on_device
from launcher.tasks.registry import task_class
from tests.conftest import REPO
from tests.helpers.image_folders import RACCOON
from tests.helpers.plans import planned
from tests.helpers.tiny_models import build_tiny_detr, build_tiny_yolos

RECIPE = REPO / "recipes" / "detect-raccoons.toml"


@pytest.mark.parametrize(("build", "mask"), [(build_tiny_detr, True), (build_tiny_yolos, False)])
def test_a_batch_trains_and_its_boxes_come_back_in_pixels(build, mask: bool,
                                                         tmp_path: Path) -> None:
    recipe, plan = planned(RECIPE, build(tmp_path / "model"))
    task = build_task(recipe, plan)
    task.tokenizer = task.load_tokenizer()
    rows = load_rows([RACCOON / "train_labels.csv"], "detection").rows[:4]
    assert len({r["image"] for r in rows}) == 4
    examples = task.encode(rows)
    assert len({e["width"] / e["height"] for e in examples}) > 1  # the batch pads some
    model = task.load_model(EncodedData(train=[], eval=[], stats=DataStats(0, 0),
                                        label_names=["raccoon"]))
    assert ("pixel_mask" in task.accepts) is mask
    assert model.config.id2label == {0: "raccoon"} and model.config.num_labels == 1
    batch = on_device(task.collate(examples), torch.device("cpu"))
    summed, images = task.loss_sum(model, batch)
    assert images == 4 and torch.isfinite(summed) and summed.requires_grad
    model.eval()
    with torch.no_grad():
        out = task.evaluate(model, batch)
    assert out.count == 4 and len(out.predictions) == 4
    for truth, row in zip(out.references, rows, strict=True):
        expected = [v for x0, y0, x1, y1 in row["boxes"] for v in (x0, y0, x1 - x0, y1 - y0)]
        assert [v for t in truth for v in t["bbox"]] == pytest.approx(expected, abs=0.05)
    for detections in out.predictions:
        assert detections and all(d["category_id"] == 0 and d["label"] == "raccoon"
                                  for d in detections)
    scores = task.metrics(out.loss_sum, out.count, out.predictions, out.references)
    assert 0 <= scores["map"] <= 1 and scores["loss"] == pytest.approx(out.loss_sum / 4)


def test_preview_draws_the_augmented_boxes_with_their_names(tmp_path: Path) -> None:
    """A contact sheet of the first rows as the first epoch augments them (64 px cells, 4 to a
    row, a caption line under each), a red box in every cell; the text names each box."""
    recipe, _ = planned(RECIPE, build_tiny_yolos(tmp_path / "model"))
    task = task_class(recipe.task.kind)
    processor = task.load_processor(str(tmp_path / "model"))
    rows = load_rows([RACCOON / "train_labels.csv"], "detection").rows[:4]
    out = tmp_path / "sheet.png"
    assert task.preview_picture(rows, processor, recipe, ["raccoon"], out)
    with Image.open(out) as sheet:
        assert sheet.size == (4 * 64, 64 + 20)
        pixels = np.asarray(sheet.convert("RGB")).astype(int)
    red = (pixels[..., 0] == 255) & (pixels[..., 1] == 0) & (pixels[..., 2] == 0)
    assert all(red[:64, 64 * i:64 * (i + 1)].sum() > 20 for i in range(4))
    text = task.preview(rows[0], processor, recipe, ["raccoon"]).summary()
    assert text == "259x194, 1 box: raccoon [95, 60, 167, 118]"
