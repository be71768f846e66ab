"""Eval pictures with boxes and masks: W&B gets its own boxes and masks (read back from a real
offline run file), TensorBoard and MLflow the layers drawn into the pixels, true beside
predicted; pictures brought to the thumbnail size with their annotations scaled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from launcher.data.encode.annotated import CAPTION, GAP, annotated, flattened
from launcher.data.encode.masks import IGNORE, overlay
from launcher.data.encode.media import THUMBNAIL, Box, Layer, Picture
from tests.helpers.wandb_file import logged_table

NAMES = ("background", "cat", "dog")


def picture() -> Picture:
    """A 40x60 grey picture: a true dog box and a predicted cat box scored 0.75; a true mask with
    a dog away from the boxes and an IGNORE band, a predicted mask of cats on the right half."""
    truth = np.zeros((40, 60), dtype=np.uint8)
    truth[10:20, 40:55] = 2
    truth[30:, :] = IGNORE
    predicted = np.zeros((40, 60), dtype=np.uint8)
    predicted[:, 30:] = 1
    return Picture(np.full((40, 60, 3), 128, dtype=np.uint8),
                   boxes={Layer.TRUE: (Box((10.0, 10.0, 30.0, 20.0), 2),),
                          Layer.PREDICTED: (Box((35.5, 5.0, 55.0, 25.25), 1, 0.75),)},
                   masks={Layer.TRUE: truth, Layer.PREDICTED: predicted}, class_names=NAMES)


WANDB_RUN = textwrap.dedent("""
    import pickle, sys
    import wandb
    from launcher.trackers.wandb_run import WandbTracker
    rows = pickle.load(open(sys.argv[1], "rb"))
    tracker = WandbTracker(wandb.init(project="t", mode="offline"))
    tracker.table("eval/examples", ["input", "reference", "prediction"], rows, step=3)
    tracker.run.finish()
""")


@pytest.fixture(scope="module")
def wandb_table(tmp_path_factory: pytest.TempPathFactory) -> tuple[list, dict[str, Path]]:
    """The table a real offline W&B run logs of an annotated picture, a plain one, and one
    whose model found nothing."""
    import pickle

    root = tmp_path_factory.mktemp("wandb")
    plain = Picture(np.zeros((8, 8, 3), dtype=np.uint8))
    missed = Picture(plain.pixels, boxes={Layer.TRUE: (Box((1, 1, 4, 4), 0),), Layer.PREDICTED: ()},
                     class_names=NAMES)
    (root / "rows.pkl").write_bytes(pickle.dumps([[picture(), "1 box", "1 box: cat 0.75"],
                                                  [plain, "a", "b"], [missed, "c", "d"]]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_DIR=str(root), WANDB_SILENT="true", WANDB_CONFIG_DIR=str(root / "config"),
               WANDB_CACHE_DIR=str(root / "cache"), WANDB_DATA_DIR=str(root / "data"),
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    subprocess.run([sys.executable, "-c", WANDB_RUN, str(root / "rows.pkl")], env=env,
                   check=True, timeout=300)
    columns, data, files = logged_table(root, "eval/examples")
    assert columns == ["input", "reference", "prediction"]
    return data, files


def test_wandb_gets_its_own_boxes_true_and_predicted(wandb_table) -> None:
    data, files = wandb_table
    cell = data[0][0]
    assert cell["_type"] == "image-file" and (cell["width"], cell["height"]) == (60, 40)
    assert data[0][1:] == ["1 box", "1 box: cat 0.75"]
    with Image.open(files[cell["path"]]) as image:  # the pixels alone: W&B draws the layers
        assert np.array_equal(np.asarray(image.convert("RGB")), picture().pixels)
    assert cell["boxes"] == {
        "ground_truth": [{"position": {"minX": 10.0, "maxX": 30.0, "minY": 10.0, "maxY": 20.0},
                          "domain": "pixel", "class_id": 2, "box_caption": "dog"}],
        "predictions": [{"position": {"minX": 35.5, "maxX": 55.0, "minY": 5.0, "maxY": 25.25},
                         "domain": "pixel", "class_id": 1, "box_caption": "cat",
                         "scores": {"score": 0.75}}]}
    assert set(data[1][0]) & {"boxes", "masks", "classes"} == set()  # a plain picture
    assert data[2][0]["boxes"]["predictions"] == []  # nothing found: an empty layer


def test_wandb_gets_its_own_masks_with_ignored_pixels_named(wandb_table) -> None:
    data, files = wandb_table
    cell, expected = data[0][0], picture()
    assert set(cell["masks"]) == {"ground_truth", "predictions"}
    for layer, name in ((Layer.TRUE, "ground_truth"), (Layer.PREDICTED, "predictions")):
        with Image.open(files[cell["masks"][name]["path"]]) as mask:
            assert np.array_equal(np.asarray(mask), expected.masks[layer])  # 255 kept
    classes = json.loads(files[cell["classes"]["path"]].read_text())
    assert classes["class_set"] == [{"id": 0, "name": "background"}, {"id": 1, "name": "cat"},
                                    {"id": 2, "name": "dog"}, {"id": IGNORE, "name": "ignore"}]


def test_the_other_trackers_get_the_layers_drawn_side_by_side() -> None:
    shown, source = flattened(picture()), picture()
    assert shown.shape == (40 + CAPTION, 2 * 60 + GAP, 3)
    true, predicted = shown[CAPTION:, :60], shown[CAPTION:, 60 + GAP:]
    tinted = np.asarray(overlay(Image.fromarray(source.pixels), source.masks[Layer.TRUE], None))
    assert np.array_equal(true[35, 5], source.pixels[35, 5])  # IGNORE: left as it is
    assert np.array_equal(true[15, 50], tinted[15, 50])  # the dog's colour
    assert not np.array_equal(tinted[15, 50], tinted[5, 5])  # not the background's
    assert tuple(true[10, 20]) == (255, 0, 0) and tuple(predicted[5, 45]) == (255, 0, 0)
    assert tuple(true[5, 45]) != (255, 0, 0)  # the predicted box on its side only
    assert tuple(predicted[35, 5]) != tuple(true[35, 5])  # predicted background, tinted
    assert np.array_equal(flattened(Picture(source.pixels)), source.pixels)


def test_tensorboard_and_mlflow_show_the_drawn_layers(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from launcher.contract.events import EventLog
    from launcher.contract.run_folder import RunFolder
    from launcher.trackers.base import Trackers
    from launcher.trackers.mlflow_run import start_mlflow
    from launcher.trackers.tensorboard_run import start_tensorboard
    from tests.helpers.plans import quickstart_plan

    recipe, plan = quickstart_plan()
    folder = RunFolder(tmp_path)
    folder.logs.mkdir()
    trackers = Trackers([start_tensorboard(recipe, plan, folder, 0),
                         start_mlflow(recipe, plan, folder, EventLog(folder.events, True))])
    trackers.table("eval/examples", ["input", "reference", "prediction"],
                   [[picture(), "1 box", "1 box: cat 0.75"]], step=2)
    trackers.finish(())
    saved = next(folder.mlflow_store.rglob("eval-examples-step-2")) / "0.png"
    assert np.array_equal(np.asarray(Image.open(saved)), flattened(picture()))
    board = EventAccumulator(str(folder.tensorboard), size_guidance={"images": 0})
    board.Reload()
    (image,) = board.Images("eval/examples/0")
    assert (image.width, image.height) == (2 * 60 + GAP, 40 + CAPTION)


def test_a_picture_comes_to_the_thumbnail_size_with_its_boxes_and_masks() -> None:
    image = Image.new("RGB", (4 * THUMBNAIL, 2 * THUMBNAIL), "white")
    mask = np.zeros((2 * THUMBNAIL, 4 * THUMBNAIL), dtype=np.uint8)
    mask[:, 2 * THUMBNAIL:] = 2
    mask[0, 0] = IGNORE
    shown = annotated(image, NAMES, boxes={Layer.PREDICTED: [Box((100, 40, 300, 200), 1, 0.5)]},
                      masks={Layer.TRUE: mask})
    assert shown.pixels.shape == (THUMBNAIL // 2, THUMBNAIL, 3)
    assert shown.boxes == {Layer.PREDICTED: (Box((25.0, 10.0, 75.0, 50.0), 1, 0.5),)}
    small = shown.masks[Layer.TRUE]
    assert small.shape == (THUMBNAIL // 2, THUMBNAIL) and small.dtype == np.uint8
    assert set(np.unique(small).tolist()) <= {0, 2, IGNORE}  # nearest: no new class
    assert (small[:, THUMBNAIL // 2 + 1:] == 2).all() and (small[1:, :THUMBNAIL // 2] == 0).all()
    assert shown.layers == [Layer.TRUE, Layer.PREDICTED] and shown.class_names == NAMES
