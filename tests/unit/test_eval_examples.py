"""What the trackers show of an eval example of detection and segmentation (each task's
`shown`): the image at the thumbnail size with its true and predicted boxes or masks scaled
with it, and the two as text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from launcher.contract.reports import DataStats
from launcher.data.encode.masks import IGNORE, open_mask
from launcher.data.encode.media import THUMBNAIL, Box, Layer
from launcher.data.formats import load_rows
from launcher.tasks.base import EncodedData, Task, build_task
from launcher.tasks.object_detection import PREDICT_THRESHOLD
from tests.conftest import REPO
from tests.helpers.image_folders import RACCOON
from tests.helpers.plans import planned
from tests.helpers.tiny_models import build_tiny_segformer, build_tiny_yolos


@pytest.fixture(scope="module")
def segmentation(tmp_path_factory: pytest.TempPathFactory) -> Task:
    """recipes/segment-voc.toml's task on a tiny SegFormer, its data encoded."""
    model = build_tiny_segformer(tmp_path_factory.mktemp("segformer") / "model")
    task = build_task(*planned(REPO / "recipes" / "segment-voc.toml", model))
    task.tokenizer = task.load_tokenizer()
    task.encoded = task.encode_data(task.tokenizer)
    return task


def test_an_eval_example_is_shown_with_its_true_and_kept_boxes(tmp_path: Path) -> None:
    """The trackers' row of an eval image: the thumbnail with its true boxes and the
    detections scored PREDICT_THRESHOLD or more, scaled with it; the two as text."""
    task = build_task(*planned(REPO / "recipes" / "detect-raccoons.toml",
                               build_tiny_yolos(tmp_path / "model")))
    task.load_model(EncodedData(train=[], eval=[], stats=DataStats(0, 0),
                                label_names=["raccoon"]))
    row = load_rows([RACCOON / "train_labels.csv"], "detection").rows[0]  # 259x194, 1 box
    found = [task.detection([10.0, 20.0, 110.0, 70.0], 0, PREDICT_THRESHOLD),
             task.detection([0.0, 0.0, 50.0, 50.0], 0, PREDICT_THRESHOLD - 0.01)]
    picture, reference, prediction = task.shown(task.encode([row])[0], task.reference(row),
                                                found)
    height = round(194 * THUMBNAIL / 259)
    assert picture.pixels.shape == (height, THUMBNAIL, 3)
    across, down = THUMBNAIL / 259, height / 194  # each side its own scale
    assert picture.class_names == ("raccoon",) and not picture.masks
    (true,) = picture.boxes[Layer.TRUE]
    assert true.class_id == 0 and true.score is None
    x0, y0, x1, y1 = row["boxes"][0]
    assert true.corners == pytest.approx((x0 * across, y0 * down, x1 * across, y1 * down),
                                         abs=0.02)
    assert picture.boxes[Layer.PREDICTED] == (
        Box(pytest.approx((10 * across, 20 * down, 110 * across, 70 * down)), 0, 0.5),)
    assert reference == "1 box: raccoon"
    assert prediction == "1 box: raccoon 0.50"


def test_an_eval_example_is_shown_with_its_true_and_predicted_masks(segmentation: Task) -> None:
    """The trackers' row of an eval image: the thumbnail, the true mask and the predicted one
    resized to it (nearest: IGNORE kept, no new class), the classes each holds."""
    example = segmentation.encoded.eval[0]
    truth = open_mask(example["mask_path"], "")[0]
    predicted = np.full(truth.shape, 15, dtype=np.uint8)  # "person", "bottle" on the left
    predicted[:, :100] = 5
    picture, reference, prediction = segmentation.shown(example, None, predicted)
    height, width = truth.shape
    assert picture.pixels.shape == (round(height * THUMBNAIL / width), THUMBNAIL, 3)
    assert picture.class_names == tuple(segmentation.encoded.label_names) and not picture.boxes
    expected = np.asarray(Image.fromarray(truth).resize(picture.pixels.shape[1::-1],
                                                        Image.Resampling.NEAREST))
    assert np.array_equal(picture.masks[Layer.TRUE], expected) and IGNORE in expected
    assert set(np.unique(picture.masks[Layer.PREDICTED]).tolist()) == {5, 15}
    assert reference == ", ".join(segmentation.encoded.label_names[v] for v in np.unique(truth)
                                  if v != IGNORE)
    assert prediction == "bottle, person"
