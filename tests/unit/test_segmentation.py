"""Semantic segmentation's data and scores on labelme's VOC example (3 photos, palette masks):
image-mask pairs read by stem with their class names, masks moved with their images by every
augmentation, bad pairs named, mean IoU as `evaluate`'s mean_iou computes it, SegFormer and
MobileNetV2's DeepLabV3 through the same task code."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from launcher.contract.errors import UsageError
from launcher.contract.reports import DataStats
from launcher.data.encode.images import Augmentation, augmentation_seed
from launcher.data.encode.masks import IGNORE, augment_pair, open_mask, resize_pair
from launcher.data.errors import DataError
from launcher.data.formats import load_rows
from launcher.tasks.base import EncodedData, Task, build_task
from launcher.tasks.pixel_scores import confusion, scores
from tests.conftest import REPO
from tests.helpers.plans import planned
from tests.helpers.tiny_models import build_tiny_deeplab, build_tiny_segformer

VOC = REPO.parent / "shared" / "data" / "labelme-voc" / "semantic_voc"
RECIPE = REPO / "recipes" / "segment-voc.toml"


def voc_rows() -> list[dict[str, Any]]:
    return load_rows([VOC], "segmentation").rows


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> Task:
    """The recipe's task on a tiny SegFormer, its data encoded."""
    model = build_tiny_segformer(tmp_path_factory.mktemp("segformer") / "model")
    task = build_task(*planned(RECIPE, model))
    task.tokenizer = task.load_tokenizer()
    task.encoded = task.encode_data(task.tokenizer)
    return task


def test_the_voc_folder_gives_image_mask_pairs_and_class_names(task: Task) -> None:
    rows = voc_rows()
    assert [Path(r["image"]).stem for r in rows] == [Path(r["mask"]).stem for r in rows]
    assert len(rows) == 3 and all(Path(r["mask"]).suffix == ".png" for r in rows)
    names = (VOC / "class_names.txt").read_text().split("\n")
    assert task.encoded.label_names == names and len(names) == 21
    assert names[0] == "_background_" and names[15] == "person"
    assert (len(task.encoded.train), len(task.encoded.eval)) == (2, 1)  # eval_fraction 0.34


def test_the_masks_move_with_their_images_under_100_augmentations() -> None:
    """Each image is painted with its mask's palette colours, so the augmented image says
    where every class went: after crop and flip it is the augmented mask's colours exactly;
    after the resize to the model's size (image bilinear, mask nearest), away from class
    boundaries, its nearest colour is the mask's class. No new mask value ever appears."""
    settings = Augmentation(crop_scale=(0.1, 1.0), crop_ratio=(0.5, 2.0), color_jitter=0.0)
    pairs = []
    for row in voc_rows():
        mask, palette = open_mask(row["mask"], row["mask"])
        colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
        pairs.append((Image.fromarray(colours[mask]), mask, colours))
    checked = 0
    for seed in range(100):
        painted, mask, colours = pairs[seed % 3]
        image, moved = augment_pair(painted, mask, settings, seed)
        assert set(np.unique(moved)) <= set(np.unique(mask))
        assert np.array_equal(np.asarray(image), colours[moved])
        small, resized = resize_pair(image, moved, (64, 48))
        assert resized.shape == (48, 64) and set(np.unique(resized)) <= set(np.unique(mask))
        present = np.unique(moved)
        distance = ((np.asarray(small, dtype=np.int32)[:, :, None, :]
                     - colours[present].astype(np.int32)) ** 2).sum(-1)
        decoded = present[distance.argmin(-1)]
        # away from boundaries: bilinear's footprint (a scale's width each side) of one class
        scale = max(image.width / 64, image.height / 48)
        far = uniform_inside(moved, int(np.ceil(scale)) + 1).astype(np.uint8)
        inner = np.asarray(Image.fromarray(far).resize((64, 48), Image.Resampling.NEAREST)) > 0
        assert np.array_equal(decoded[inner], resized[inner]), seed
        checked += int(inner.sum())
    assert checked > 100 * 64 * 48 // 2  # most pixels are away from a boundary


def uniform_inside(mask: np.ndarray, radius: int) -> np.ndarray:
    """Where every pixel within `radius` (a square) holds the same class."""
    padded = np.pad(mask, radius, mode="edge")
    window = 2 * radius + 1
    low = sliding_window_view(sliding_window_view(padded, window, 0).min(-1), window, 1).min(-1)
    high = sliding_window_view(sliding_window_view(padded, window, 0).max(-1), window, 1).max(-1)
    return low == high


def test_training_batches_hold_masks_at_the_model_size_with_their_classes_only(task: Task
                                                                               ) -> None:
    examples = [{**e, "augment_seed": seed} for seed, e in enumerate(task.encoded.train)]
    batch = task.collate(examples)
    assert batch["pixel_values"].shape == (2, 3, 64, 64)
    assert batch["labels"].shape == (2, 64, 64) and "sizes" not in batch
    original = set().union(*(np.unique(open_mask(r["mask"], "")[0]).tolist()
                             for r in voc_rows()))
    assert set(batch["labels"].unique().tolist()) <= original
    evaluated = task.collate(list(task.encoded.eval))  # eval: the mask at its full size
    height, width = evaluated["sizes"][0].tolist()
    assert (height, width) in {(338, 500), (375, 500)}
    assert evaluated["labels"].shape == (1, height, width)


def copy_voc(folder: Path) -> Path:
    shutil.copytree(VOC, folder)
    return folder


@pytest.mark.parametrize("missing", ["mask", "image"])
def test_an_image_without_its_mask_and_a_mask_without_its_image_are_named(
        tmp_path: Path, missing: str) -> None:
    voc = copy_voc(tmp_path / "voc")
    gone = (voc / "SegmentationClass" / "2011_000006.png" if missing == "mask"
            else voc / "JPEGImages" / "2011_000006.jpg")
    gone.unlink()
    other = (voc / "JPEGImages" / "2011_000006.jpg" if missing == "mask"
             else voc / "SegmentationClass" / "2011_000006.png")
    with pytest.raises(DataError, match=f"^{other}: an? {'image' if missing == 'mask' else 'mask'}"
                       f" with no {missing}"):
        load_rows([voc], "segmentation")
    skipped = load_rows([voc], "segmentation", on_bad_row="skip")
    assert len(skipped.rows) == 2 and len(skipped.skipped) == 1


def test_a_mask_of_another_size_or_with_an_unknown_class_is_named(task: Task,
                                                                  tmp_path: Path) -> None:
    row = voc_rows()[0]
    mask, palette = open_mask(row["mask"], "")
    cases = {"small.png": mask[:100, :100], "unknown.png": np.where(mask == 5, 40, mask)}
    expected = {"small.png": "the mask is 100x100, its image 500x338",
                "unknown.png": "mask values [40] are not class ids (0..20, or 255"}
    for name, values in cases.items():
        bad = Image.fromarray(values.astype(np.uint8)).convert("P")
        bad.putpalette(palette)
        bad.save(tmp_path / name)
        bad_row = {"image": row["image"], "mask": str(tmp_path / name)}
        with pytest.raises(UsageError) as raised:
            task.encode([bad_row])
        assert str(raised.value).startswith(f"bad data: {tmp_path / name}: {expected[name]}")
        skipped: list[DataError] = []
        task.recipe.data.on_bad_row = "skip"
        try:
            assert len(task.encode([bad_row, row], skipped)) == 1 and len(skipped) == 1
        finally:
            task.recipe.data.on_bad_row = "error"


# evaluate's mean_iou on its own documented example (num_labels=10, ignore_index=255)
PREDICTED = [[[1, 2], [3, 4], [5, 255]], [[2, 7], [9, 2], [3, 6]],
             [[2, 2, 3], [8, 2, 4], [3, 255, 2]]]
ACTUAL = [[[0, 3], [5, 4], [6, 255]], [[1, 7], [9, 2], [3, 6]],
          [[1, 2, 2], [8, 2, 1], [3, 255, 1]]]


def scored(predicted: list[Any], actual: list[Any], classes: int) -> dict[str, Any]:
    """The task's scores of these masks: one confusion matrix summed over them."""
    cells = sum(confusion(torch.tensor(a), torch.tensor(p), classes)
                for p, a in zip(predicted, actual, strict=True))
    return scores(cells.reshape(classes, classes).double().numpy(),
                  [str(i) for i in range(classes)])


def test_mean_iou_is_evaluates_on_its_documented_example() -> None:
    found = scored(PREDICTED, ACTUAL, 10)
    assert found["mean_iou"] == pytest.approx(0.47750000000000004, abs=1e-15)
    assert found["pixel_accuracy"] == pytest.approx(0.5263157894736842, abs=1e-15)
    assert found["mean_accuracy"] == pytest.approx(0.5916666666666666, abs=1e-15)
    assert [found["per_class"][str(i)]["iou"] for i in range(10)] == pytest.approx(
        [0, 0, 0.375, 0.4, 0.5, 0, 0.5, 1, 1, 1])


def test_a_class_in_neither_masks_nor_predictions_is_left_out_as_evaluate_does() -> None:
    """Class 3 is nowhere (evaluate: NaN, skipped by its means); class 2 is predicted only
    (IoU 0, no accuracy); ignored pixels count for nothing whatever is predicted there.
    Figures: evaluate's mean_iou (num_labels=4, ignore_index=255) on the same masks."""
    actual = [[[0, 0, 1, 255], [1, 1, 255, 0]], [[0, 1, 1, 1]]]
    predicted = [[[0, 1, 1, 2], [1, 2, 0, 0]], [[0, 0, 1, 1]]]
    found = scored(predicted, actual, 4)
    assert {k: v["iou"] for k, v in found["per_class"].items()} == pytest.approx(
        {"0": 0.6, "1": 4 / 7, "2": 0.0})
    assert found["mean_iou"] == pytest.approx(EVALUATE_FIGURES["mean_iou"], abs=1e-15)
    assert found["pixel_accuracy"] == pytest.approx(EVALUATE_FIGURES["overall_accuracy"],
                                                    abs=1e-15)
    assert found["mean_accuracy"] == pytest.approx(EVALUATE_FIGURES["mean_accuracy"], abs=1e-15)


EVALUATE_FIGURES = {"mean_iou": 0.3904761904761904, "overall_accuracy": 0.7,
                    "mean_accuracy": 0.7083333333333333}  # per class IoU: 0.6, 4/7, 0, NaN


@pytest.mark.parametrize("build", [build_tiny_segformer, build_tiny_deeplab])
def test_segformer_and_deeplab_train_and_score_through_the_same_code(
        build: Any, tmp_path: Path, task: Task) -> None:
    """The recipe's plan with its model replaced (as `sft-launch predict` does). DeepLabV3
    trains on 2 images or more at a time: its pooling branch's batch norm needs them."""
    folder = str(build(tmp_path / "model"))
    model_task = build_task(task.recipe, dataclasses.replace(task.plan, model_path=folder,
                                                             tokenizer_path=folder))
    model_task.tokenizer = model_task.load_tokenizer()
    model = model_task.load_model(EncodedData(train=list(task.encoded.train), eval=[],
                                              stats=DataStats(0, 0),
                                              label_names=task.encoded.label_names))
    assert model.config.num_labels == 21 and model.config.id2label[15] == "person"
    assert len(model.config.mask_palette) == 768  # the VOC masks' palette, for predict
    train = model_task.collate([{**e, "augment_seed": 1} for e in task.encoded.train])
    loss, images = model_task.loss_sum(model.train(), train)
    loss.backward()
    assert images == 2 and torch.isfinite(loss)
    with torch.no_grad():  # per-image means, summed: a batch splits into micro-batches exactly
        model.eval()
        pair = model_task.loss_sum(model, train)[0]
        parts = [model_task.loss_sum(model, {k: v[i:i + 1] for k, v in train.items()})[0]
                 for i in range(2)]
    assert float(pair) == pytest.approx(float(sum(parts)), rel=1e-5)
    with torch.no_grad():
        out = model_task.evaluate(model.eval(), model_task.collate(list(task.encoded.eval)))
    stem = Path(task.encoded.eval[0]["path"]).stem
    mask = open_mask(str(VOC / "SegmentationClass" / f"{stem}.png"), "")[0]
    assert out.count == 1 and sum(out.sums.values()) == (mask != IGNORE).sum()  # every pixel


def test_an_hf_dataset_of_image_and_mask_features_gives_the_same_pairs(task: Task,
                                                                      tmp_path: Path) -> None:
    """A Hub-style folder (parquet, two Image features) read through `datasets`: each mask
    reaches the task with its class ids and palette."""
    import datasets

    rows = voc_rows()
    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image()})
    datasets.Dataset.from_dict({"image": [r["image"] for r in rows],
                                "mask": [r["mask"] for r in rows]}, features=features
                               ).to_parquet(str(tmp_path / "train.parquet"))
    loaded = load_rows([f"hf:{tmp_path}"], "segmentation").rows
    assert len(loaded) == 3 and all(isinstance(r["mask"], bytes) for r in loaded)
    for row, file_row in zip(loaded, rows, strict=True):
        values, palette = open_mask(row["mask"], "hub mask")
        original, original_palette = open_mask(file_row["mask"], "")
        assert np.array_equal(values, original) and palette == original_palette
    assert len(task.encode(loaded)) == 3


def test_preview_names_the_classes_and_draws_masks_over_their_images(task: Task,
                                                                    tmp_path: Path) -> None:
    """The text preview: the size and the classes in the mask; the picture: each image at the
    model's size, tinted where its mask has a class, untouched where it is ignored."""
    rows, names = voc_rows(), task.encoded.label_names
    note = type(task).preview(rows[0], task.tokenizer, task.recipe, names).note
    assert note == "500x338, classes: _background_, bottle, person"
    out = tmp_path / "sheet.png"
    assert type(task).preview_picture(rows, task.tokenizer, task.recipe, names, out)
    with Image.open(out) as sheet:
        assert sheet.size == (4 * 64, 64 + 20)
        cell = np.asarray(sheet.convert("RGB"))[:64, :64].astype(int)
    image, mask = augment_pair(Image.open(rows[0]["image"]).convert("RGB"),
                               open_mask(rows[0]["mask"], "")[0],
                               Augmentation(**task.recipe.data.augment.model_dump()),
                               augmentation_seed(task.recipe.train.seed, 0, 0))
    plain, small = resize_pair(image, mask, (64, 64))
    plain = np.asarray(plain).astype(int)
    assert np.array_equal(cell[small == IGNORE], plain[small == IGNORE])
    tinted = (small != IGNORE) & (small != 0)  # a class with a colour (background: black)
    assert tinted.any() and (np.abs(cell - plain).sum(-1)[tinted] > 0).mean() > 0.9


def test_jsonl_rows_name_their_files_and_a_colour_mask_is_refused(task: Task,
                                                                  tmp_path: Path) -> None:
    """Rows of a data file: paths relative to it; a missing mask file names the file and line;
    an RGB mask (colours, not class ids) names the mask."""
    voc = copy_voc(tmp_path / "voc")
    rgb = voc / "SegmentationClass" / "rgb.png"
    Image.open(voc / "SegmentationClass" / "2011_000003.png").convert("RGB").save(rgb)
    lines = ['{"image": "voc/JPEGImages/2011_000003.jpg", '
             '"mask": "voc/SegmentationClass/2011_000003.png"}',
             '{"image": "voc/JPEGImages/2011_000006.jpg", "mask": "voc/SegmentationClass/rgb.png"}',
             '{"image": "voc/JPEGImages/2011_000025.jpg", "mask": "voc/gone.png"}']
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=f"^{data}:3: mask file not found: {tmp_path}/voc/gone"):
        load_rows([data], "segmentation")
    data.write_text("\n".join(lines[:2]) + "\n")
    rows = load_rows([data], "segmentation").rows
    assert rows[0]["mask"] == str(voc / "SegmentationClass" / "2011_000003.png")
    with pytest.raises(UsageError, match=f"^bad data: {rgb}: a RGB mask: colours do not say"):
        task.encode(rows)
