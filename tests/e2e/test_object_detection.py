"""Object detection end to end on the real raccoon photos through recipes/detect-raccoons.toml
(a tiny random-init YOLOS in place of YOLOS-tiny): the loss falls on 1 process and the in-run
mAP is pycocotools' on the written predictions; 2 processes (ddp, W&B offline) finish with mAP
in the summary, W&B's eval table shows each image with its true and predicted boxes (W&B's own
boxes), report.png the first 4 drawn, and `sft-launch predict` writes COCO detections."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from launcher.contract.evaluation import Prediction
from launcher.contract.events import TrainLogged
from launcher.contract.run_folder import RunFolder
from tests.conftest import REPO, SFT_LAUNCH, cli_env
from tests.helpers.image_folders import RACCOON
from tests.helpers.run_folder import events, of_kind, rank_reports, summary
from tests.helpers.tiny_models import build_tiny_yolos

pytestmark = pytest.mark.slow
RECIPE = REPO / "recipes" / "detect-raccoons.toml"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_yolos(tmp_path_factory.mktemp("detection") / "yolos")


def train(model: Path, run_dir: Path, procs: int, steps: int, *sets: str) -> Path:
    """The shipped recipe on the tiny model, `procs` processes, `steps` steps of 8 images."""
    result = subprocess.run(
        [*SFT_LAUNCH, RECIPE, "--backend", "local", "--run-dir", run_dir, "--quiet",
         "--set", f"model.path='{model}'", "--set", f"distributed.procs_per_node={procs}",
         "--set", f"train.max_steps={steps}", "--set", "train.lr=1e-2",
         "--set", "train.log_every=1", "--set", "train.warmup_ratio=0",
         "--set", "tracking.mode=disabled", *sets],
        cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return run_dir


def cocoeval_map(rows: list[Prediction]) -> float:
    """pycocotools' mAP of the written predictions against the written references."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    truth = [{"id": n, "image_id": r.index, "category_id": box["category_id"],
              "bbox": box["bbox"], "area": box["bbox"][2] * box["bbox"][3], "iscrowd": 0}
             for n, (r, box) in enumerate(((r, b) for r in rows for b in r.reference), 1)]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": [{"id": r.index} for r in rows], "annotations": truth,
                      "categories": [{"id": 0, "name": "raccoon"}]}
        gt.createIndex()
        found = gt.loadRes([{**d, "image_id": r.index} for r in rows for d in r.prediction])
        evaluation = COCOeval(gt, found, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[0])


def test_one_process_loss_falls_and_map_is_pycocotools(model: Path, tmp_path: Path) -> None:
    run_dir = train(model, tmp_path / "one", 1, 8)
    losses = [e.loss for e in of_kind(events(run_dir), TrainLogged)]
    assert len(losses) == 8 and sum(losses[-2:]) < 0.9 * sum(losses[:2]), losses
    done = summary(run_dir)
    assert done.data.eval_rows == 16 and done.data.train_rows == 144
    rows = Prediction.read_lines(RunFolder(run_dir).predictions)
    assert [r.index for r in rows] == list(range(16))
    assert sum(len(r.reference) for r in rows) >= 16
    assert {"map", "map_50", "map_75"} <= set(done.eval)
    assert done.eval["map"] == pytest.approx(cocoeval_map(rows), abs=1e-12)
    assert set(done.eval_tables["per_class"]) == {"raccoon"}
    config = json.loads((run_dir / "final" / "config.json").read_text())
    assert config["id2label"] == {"0": "raccoon"}
    assert json.loads((run_dir / "label_names.json").read_text())["names"] == ["raccoon"]


def test_two_processes_finish_and_predict_writes_coco_detections(
        model: Path, tmp_path: Path, run_cli) -> None:
    # 9 eval images: 2 forwards on rank 0, 1 on rank 1, but the loss all-reduces the box
    # count in each forward: the task's `collective_forward` evens them (else: a hang).
    run_dir = train(model, tmp_path / "two", 2, 4, "--set", "data.max_eval_samples=9",
                    "--set", "tracking.mode=offline")
    assert summary(run_dir).data.eval_rows == 9
    assert_boxes_shown(run_dir)
    reports = rank_reports(run_dir)
    assert {r.world_size for r in reports} == {2}
    assert len({r.final_weights_sha256 for r in reports}) == 1
    assert 0 <= summary(run_dir).eval["map"] <= 1
    photos = tmp_path / "new"
    photos.mkdir()
    for name in ("raccoon-1.jpg", "raccoon-2.jpg", "raccoon-3.jpg"):
        shutil.copy(RACCOON / "images" / name, photos / name)
    result = run_cli("predict", run_dir, "--data", photos, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = Prediction.read_lines(RunFolder(run_dir).predictions_on("new"))
    assert [r.index for r in rows] == [0, 1, 2]
    for row in rows:
        for detection in row.prediction:
            assert set(detection) == {"image_id", "category_id", "bbox", "score", "label"}
            assert detection["image_id"] == row.index and detection["score"] >= 0.5
            assert len(detection["bbox"]) == 4 and detection["bbox"][2] > 0



def assert_boxes_shown(run_dir: Path) -> None:
    """W&B's eval table: each eval image at the thumbnail size with its true boxes and the
    detections scored 0.5 or more (those of eval_predictions.jsonl) scaled with it, as W&B's
    ground_truth and predictions boxes; the first 4 images drawn in eval_examples/ for
    report.png."""
    from PIL import Image

    from launcher.contract.reports import ReportData
    from launcher.data.splits import load_splits
    from launcher.recipe.load import load_recipe
    from tests.helpers.wandb_file import logged_table

    columns, data, _ = logged_table(run_dir / "wandb", "eval/examples")
    assert columns == ["input", "reference", "prediction"]
    written = Prediction.read_lines(RunFolder(run_dir).predictions)
    images = load_splits(load_recipe(RECIPE, ["data.max_eval_samples=9"])).eval
    assert len(data) == len(written) == len(images) == 9
    for (cell, reference, prediction), row, image in zip(data, written, images, strict=True):
        with Image.open(image["image"]) as photo:
            across, down = cell["width"] / photo.width, cell["height"] / photo.height
        assert max(cell["width"], cell["height"]) <= 256
        kept = [d for d in row.prediction if d["score"] >= 0.5]
        for layer, detections in (("ground_truth", row.reference), ("predictions", kept)):
            shown = cell["boxes"][layer]
            assert len(shown) == len(detections)
            for box, found in zip(shown, detections, strict=True):
                x, y, w, h = found["bbox"]
                assert box["domain"] == "pixel" and box["class_id"] == found["category_id"] == 0
                assert box["box_caption"] == "raccoon"
                assert [box["position"][k] for k in ("minX", "minY", "maxX", "maxY")] == \
                    pytest.approx([x * across, y * down, (x + w) * across, (y + h) * down])
                assert box.get("scores") == ({"score": found["score"]} if "score" in found
                                             else None)
        assert reference.startswith(f"{len(row.reference)} box")
        assert prediction.startswith(f"{len(kept)} box")
    kept = ReportData.read(RunFolder(run_dir).report_data).examples
    assert kept == tuple(f"eval_examples/{n}.png" for n in range(4))
    for name, (cell, _, _) in zip(kept, data, strict=False):
        with Image.open(run_dir / name) as drawn:  # true beside predicted, each named above
            assert drawn.size == (2 * cell["width"] + 4, cell["height"] + 14)
