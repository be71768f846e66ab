"""Semantic segmentation end to end: the shipped recipe (labelme's VOC example, palette masks)
with a tiny random-init SegFormer through the real CLI, in 1 process (the loss falls) and in 2
over gloo (DDP, W&B offline: eval mean IoU in the summary, W&B's eval table shows the image with
its true and predicted masks, report.png it drawn); `sft-launch predict` writes a palette mask
PNG per image, the same mask the table shows."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from launcher.contract.evaluation import Prediction
from launcher.contract.events import TrainLogged
from launcher.contract.run_folder import RunFolder
from tests.conftest import REPO, SFT_LAUNCH, cli_env
from tests.helpers.run_folder import events, of_kind, rank_reports, summary
from tests.helpers.tiny_models import build_tiny_segformer

pytestmark = pytest.mark.slow
RECIPE = REPO / "recipes" / "segment-voc.toml"
VOC = REPO.parent / "shared" / "data" / "labelme-voc" / "semantic_voc"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_segformer(tmp_path_factory.mktemp("segformer") / "model")


def train(model: Path, run_dir: Path, *sets: str) -> None:
    """The recipe on the tiny model, a few steps at a tiny model's learning rate."""
    settings = [f"model.path={model}", "train.lr=5e-3", "train.warmup_ratio=0",
                "train.log_every=1", "tracking.mode=disabled", *sets]
    done = subprocess.run([*SFT_LAUNCH, RECIPE, "--backend", "local", "--run-dir", run_dir,
                           "--quiet", *(a for s in settings for a in ("--set", s))],
                          cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def test_one_process_learns_and_scores_mean_iou(model: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(model, run_dir, "distributed.procs_per_node=1", "train.max_steps=8",
          "train.micro_batch_size=1")  # 2 micro-batches a step; the probe of the 2-process run
    losses = [e.loss for e in of_kind(events(run_dir), TrainLogged)]
    assert len(losses) == 8 and losses[-1] < losses[0], losses
    done = summary(run_dir)
    assert 0 <= done.eval["mean_iou"] <= 1 and 0 <= done.eval["pixel_accuracy"] <= 1
    assert "_background_" in done.eval_tables["per_class"]


def test_two_processes_train_and_predict_writes_mask_pngs(model: Path, tmp_path: Path,
                                                          run_cli) -> None:
    run_dir = tmp_path / "run"
    train(model, run_dir, "train.max_steps=4", "tracking.mode=offline")
    reports = rank_reports(run_dir)
    assert {r.world_size for r in reports} == {2} and {r.strategy for r in reports} == {"ddp"}
    assert len({r.final_weights_sha256 for r in reports}) == 1
    done = summary(run_dir)
    assert done.steps == 4 and 0 <= done.eval["mean_iou"] <= 1
    result = run_cli("predict", run_dir, "--data", VOC / "JPEGImages", timeout=300)
    assert result.returncode == 0, result.stderr
    rows = Prediction.read_lines(RunFolder(run_dir).predictions_on("JPEGImages"))
    images = sorted((VOC / "JPEGImages").iterdir())
    assert [Path(r.prediction).name for r in rows] == [f"{p.stem}.png" for p in images]
    for row, image in zip(rows, images, strict=True):
        with Image.open(row.prediction) as mask, Image.open(image) as photo:
            assert mask.mode == "P" and mask.size == photo.size  # the VOC masks' palette
            assert set(np.unique(np.asarray(mask)).tolist()) <= set(range(21))
            with Image.open(VOC / "SegmentationClass" / f"{image.stem}.png") as truth:
                assert mask.getpalette() == truth.getpalette()
    assert_masks_shown(run_dir, {Path(r.prediction).stem: Path(r.prediction) for r in rows})


def assert_masks_shown(run_dir: Path, predicted: dict[str, Path]) -> None:
    """W&B's eval table: the eval image (1 of the 3) at the thumbnail size, its true mask and
    the final model's (`predict`'s, resized nearest) as W&B's ground_truth and predictions
    masks, IGNORE named "ignore"; report.png's picture in eval_examples/."""
    from launcher.contract.reports import ReportData
    from tests.helpers.wandb_file import logged_table

    columns, data, files = logged_table(run_dir / "wandb", "eval/examples")
    assert columns == ["input", "reference", "prediction"] and len(data) == 1
    (cell, reference, prediction), = data
    with Image.open(files[cell["masks"]["ground_truth"]["path"]]) as shown:
        true = np.asarray(shown)
    size = (cell["width"], cell["height"])
    assert max(size) <= 256 and true.shape == size[::-1]
    (stem,) = [s for s in predicted if np.array_equal(true, np.asarray(Image.open(
        VOC / "SegmentationClass" / f"{s}.png").resize(size, Image.Resampling.NEAREST)))]
    assert 255 in true  # VOC's outlines, ignored
    with Image.open(files[cell["masks"]["predictions"]["path"]]) as shown, \
            Image.open(predicted[stem]) as written:
        found = np.asarray(shown)
        expected = np.asarray(written.resize(size, Image.Resampling.NEAREST))
    assert (found == expected).mean() > 0.99  # the same model, batched otherwise
    names = (VOC / "class_names.txt").read_text().splitlines()
    with Image.open(VOC / "SegmentationClass" / f"{stem}.png") as mask:
        assert reference == ", ".join(names[v] for v in np.unique(mask) if v != 255)
    assert set(prediction.split(", ")) >= {names[v] for v in np.unique(found)}  # at full size
    classes = json.loads(files[cell["classes"]["path"]].read_text())["class_set"]
    assert classes == [{"id": i, "name": n} for i, n in enumerate(names)] + [
        {"id": 255, "name": "ignore"}]
    assert ReportData.read(RunFolder(run_dir).report_data).examples == ("eval_examples/0.png",)
    with Image.open(run_dir / "eval_examples" / "0.png") as drawn:
        assert drawn.size == (2 * size[0] + 4, size[1] + 14)
