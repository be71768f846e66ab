"""Image classification end to end on real photos (ants vs bees), 2 processes over gloo: a tiny
random-init ViT through the real CLI, augmentation on; eval/predict on image folders; a kill -9
and --resume that ends bitwise equal to the uninterrupted run; bad images named."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from launcher.contract.evaluation import EvalReport, Prediction
from launcher.contract.events import Checkpointed, TrainLogged
from launcher.contract.plan import WorldSpan
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import Strategy
from tests.conftest import REPO, SFT_LAUNCH, cli_env
from tests.helpers.image_folders import HYMENOPTERA, copy_images
from tests.helpers.processes import kill_everything, wait_for_event
from tests.helpers.run_folder import events, of_kind, plan, rank_reports, summary
from tests.helpers.tiny_models import build_tiny_vit
from tests.helpers.wandb_file import logged_table

pytestmark = pytest.mark.slow
STEPS, SAVE_EVERY, TRAIN_PER_CLASS, EVAL_PER_CLASS = 8, 4, 16, 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("images")
    paths = {"model": build_tiny_vit(root / "vit"),
             "train": copy_images(HYMENOPTERA, root / "train", 0, TRAIN_PER_CLASS),
             "eval": copy_images(HYMENOPTERA, root / "eval", TRAIN_PER_CLASS, EVAL_PER_CLASS)}
    gif = next(HYMENOPTERA.rglob("*.gif"))  # a GIF among the JPEGs: decoded to RGB
    shutil.copy(gif, paths["train"] / gif.parent.name / gif.name)
    recipe = root / "images.toml"
    recipe.write_text(f"""
[model]
path = "{paths['model']}"
[task]
kind = "image_classification"
[data]
train = "{paths['train']}"
eval = "{paths['eval']}"
[data.augment]
[train]
max_steps = {STEPS}
global_batch_size = 8
lr = 1e-3
log_every = 1
save_every = {SAVE_EVERY}
[distributed]
strategy = "ddp"
procs_per_node = 2
[tracking]
to = ["wandb", "tensorboard"]
mode = "offline"
""")
    paths["recipe"] = recipe
    return paths


def launch(recipe: Path, run_dir: Path, *extra: str, fault: str = "") -> subprocess.Popen:
    """sft-launch on the local backend; `fault`: SFT_LAUNCH_FAULT for its workers."""
    return subprocess.Popen([*SFT_LAUNCH, recipe, "--backend", "local", "--run-dir", run_dir,
                             "--quiet", *extra], cwd=REPO,
                            env=cli_env(SFT_LAUNCH_FAULT=fault), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


@pytest.fixture(scope="module")
def reference(setup: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    proc = launch(setup["recipe"], run_dir)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return run_dir


def test_two_processes_train_and_save_a_labelled_model(reference: Path,
                                                       setup: dict[str, Path]) -> None:
    reports = rank_reports(reference)
    assert {r.world_size for r in reports} == {2} and {r.strategy for r in reports} == {"ddp"}
    assert len({r.final_weights_sha256 for r in reports}) == 1
    config = json.loads((reference / "final" / "config.json").read_text())
    assert config["id2label"] == {"0": "ants", "1": "bees"}
    assert (reference / "final" / "preprocessor_config.json").is_file()
    done = summary(reference)
    assert done.steps == STEPS and done.samples == STEPS * 8
    assert 0 <= done.eval["accuracy"] <= 1 and "macro_f1" in done.eval
    confusion = done.eval_tables["confusion"]
    assert sum(n for row in confusion.values() for n in row.values()) == 2 * EVAL_PER_CLASS
    losses = [e.loss for e in of_kind(events(reference), TrainLogged)]
    assert len(losses) == STEPS and all(loss == loss for loss in losses)  # no NaN


def test_the_trackers_show_eval_images_with_their_true_and_predicted_labels(
        reference: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    columns, data, files = logged_table(reference / "wandb", "eval/examples")
    assert columns == ["input", "reference", "prediction"]
    final = Prediction.read_lines(RunFolder(reference).predictions)
    assert len(data) == min(16, 2 * EVAL_PER_CLASS)
    assert [(row[1], row[2]) for row in data] == [(p.reference, p.prediction)
                                                  for p in final[:len(data)]]
    for cell in (row[0] for row in data):
        assert cell["_type"] == "image-file" and max(cell["width"], cell["height"]) <= 256
        assert files[cell["path"]].is_relative_to(reference)  # kept for `wandb sync`
        assert files[cell["path"]].read_bytes().startswith(b"\x89PNG")
    board = EventAccumulator(str(reference / "tensorboard"), size_guidance={"images": 0})
    board.Reload()
    shown = [tag for tag in board.Tags()["images"] if tag.startswith("eval/examples/")]
    assert len(shown) == len(data)


def test_eval_on_the_same_images_gives_the_in_run_figures(reference: Path, run_cli,
                                                          setup: dict[str, Path]) -> None:
    result = run_cli("eval", reference, "--data", setup["eval"], timeout=300)
    assert result.returncode == 0, result.stderr
    report = EvalReport.read(RunFolder(reference).eval_report("eval"))
    assert report.rows == 2 * EVAL_PER_CLASS
    assert report.metrics["accuracy"] == summary(reference).eval["accuracy"]
    assert report.metrics["loss"] == pytest.approx(summary(reference).eval["loss"], abs=1e-5)


def test_predict_labels_a_folder_of_images(reference: Path, run_cli, tmp_path: Path,
                                           setup: dict[str, Path]) -> None:
    images = tmp_path / "new"
    images.mkdir()
    for image in sorted((setup["eval"] / "bees").iterdir())[:3]:
        shutil.copy(image, images / image.name)
    result = run_cli("predict", reference, "--data", images, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = Prediction.read_lines(RunFolder(reference).predictions_on("new"))
    assert [r.index for r in rows] == [0, 1, 2]
    assert {r.prediction for r in rows} <= {"ants", "bees"}


def test_kill_9_then_resume_gives_the_uninterrupted_weights(reference: Path,
                                                            setup: dict[str, Path],
                                                            tmp_path: Path) -> None:
    """Augmentation is a pure function of (seed, epoch, row): the resumed steps see the same
    pixels, so the weights are bitwise the reference's."""
    run_dir, untracked = tmp_path / "run", ("--set", "tracking.mode=disabled")
    # Every rank freezes (SIGSTOP) once its checkpoint is written, so that kill -9 lands there.
    first = launch(setup["recipe"], run_dir, *untracked, fault=f"STOP@{SAVE_EVERY}")
    wait_for_event(run_dir, lambda e: isinstance(e, Checkpointed) and e.step == SAVE_EVERY,
                   first)
    kill_everything(run_dir, first)
    elastic = tmp_path / "elastic"
    shutil.copytree(run_dir, elastic)
    second = launch(setup["recipe"], run_dir, "--resume", *untracked)
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out
    assert {r.final_weights_sha256 for r in rank_reports(run_dir)} == {
        r.final_weights_sha256 for r in rank_reports(reference)}
    # Elastic: the same checkpoint on 1 process, the global batch kept by accumulation.
    third = launch(setup["recipe"], elastic, "--resume", "--procs-per-node", "1", *untracked)
    out, _ = third.communicate(timeout=600)
    assert third.returncode == 0, out
    assert plan(elastic).world_history == (WorldSpan(0, 1, 2), WorldSpan(SAVE_EVERY, 1, 1))
    assert summary(elastic).steps == STEPS
    theirs, ours = final_weights(reference), final_weights(elastic)
    start = final_weights(setup["model"])
    worst = max((ours[k] - theirs[k]).abs().max().item() for k in theirs)
    moved = max((theirs[k] - start[k]).abs().max().item() for k in theirs
                if k in start and start[k].shape == theirs[k].shape)
    # The same pixels in the same steps: float-order noise (8.6e-7 measured), far below what
    # 8 Adam steps of lr 1e-3 moved the weights (4.4e-3).
    assert worst < 1e-5 and moved > 1e-3, (worst, moved)


def final_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    model = folder / "final" if (folder / "final").is_dir() else folder
    return load_file(model / "model.safetensors")


def test_lora_trains_an_adapter_and_the_head_that_eval_reloads(setup: dict[str, Path],
                                                               run_cli, tmp_path: Path) -> None:
    """LoRA on every linear layer of the ViT, its new head trained in full and saved beside
    the adapters; the plan's memory measured with them; `sft-launch eval` on the adapter run
    gives the in-run figures."""
    from safetensors import safe_open

    run_dir = tmp_path / "lora"
    proc = launch(setup["recipe"], run_dir, "--set", "model.lora.r=4",
                  "--set", "tracking.mode=disabled")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    names = {p.name for p in (run_dir / "final").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors",
            "preprocessor_config.json"} <= names and "model.safetensors" not in names
    with safe_open(run_dir / "final" / "adapter_model.safetensors", "pt") as adapter:
        keys = list(adapter.keys())
    assert all("lora_" in key or ".classifier." in key for key in keys), keys
    assert any(".classifier." in key for key in keys), "the new head is saved with the adapter"
    memory = plan(run_dir).memory
    assert memory is not None
    estimate = memory.estimate_for(Strategy.DDP, ())
    assert estimate.optimizer_bytes < 0.2 * 2 * estimate.params_bytes  # Adam for adapters+head
    result = run_cli("eval", run_dir, "--data", setup["eval"], timeout=300)
    assert result.returncode == 0, result.stderr
    report = EvalReport.read(RunFolder(run_dir).eval_report("eval"))
    assert report.metrics["accuracy"] == summary(run_dir).eval["accuracy"]
    assert report.metrics["loss"] == pytest.approx(summary(run_dir).eval["loss"], abs=1e-5)
    # `export --merge`: a plain image classifier with the run's labels and processor, whose
    # logits are the adapter's on the base model.
    assert run_cli("export", run_dir, "--merge", timeout=300).returncode == 0
    import torch
    from peft import PeftModel
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    merged = AutoModelForImageClassification.from_pretrained(run_dir / "merged").eval()
    assert merged.config.id2label == {0: "ants", 1: "bees"}
    pixels = AutoImageProcessor.from_pretrained(run_dir / "merged")(
        images=[Image.open(next((setup["eval"] / "bees").iterdir())).convert("RGB")],
        return_tensors="pt")["pixel_values"]
    base = AutoModelForImageClassification.from_pretrained(
        setup["model"], num_labels=2, ignore_mismatched_sizes=True)
    adapted = PeftModel.from_pretrained(base, run_dir / "final").eval()
    with torch.no_grad():
        assert torch.allclose(merged(pixels).logits, adapted(pixels).logits, atol=1e-5)


def test_a_truncated_jpeg_is_named_or_skipped(setup: dict[str, Path], tmp_path: Path) -> None:
    train = copy_images(HYMENOPTERA, tmp_path / "train", 0, 8)
    good = sorted((train / "ants").iterdir())[0]
    bad = train / "ants" / "truncated.jpg"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (train / "bees" / "notes.png").write_text("not an image\n")
    recipe = tmp_path / "r.toml"
    recipe.write_text(setup["recipe"].read_text().replace(str(setup["train"]), str(train))
                      .replace(f"max_steps = {STEPS}", "max_steps = 1")
                      .replace("save_every = 4", "save_every = 0"))
    failed = launch(recipe, tmp_path / "failed")
    out, _ = failed.communicate(timeout=600)
    assert failed.returncode != 0
    assert f"{bad}: truncated or corrupt image" in out and "on_bad_row" in out, out
    assert "Traceback" not in out, out
    skipped = launch(recipe, tmp_path / "skipped", "--set", "data.on_bad_row=skip")
    out, _ = skipped.communicate(timeout=600)
    assert skipped.returncode == 0, out
    assert summary(tmp_path / "skipped").data.skipped_rows == 2


def test_preview_draws_the_augmented_images_with_their_labels(setup: dict[str, Path], run_cli,
                                                              tmp_path: Path) -> None:
    """A contact sheet of the first rows after augmentation, at the processor's size (32 px
    cells, 4 to a row, a caption line under each)."""
    from PIL import Image

    out = tmp_path / "sheet.png"
    result = run_cli("preview", setup["recipe"], "--rows", "6", "--picture", out)
    assert result.returncode == 0, result.stderr
    assert f"picture: {out}" in result.stdout and "label: ants" in result.stdout
    with Image.open(out) as sheet:
        assert sheet.size == (4 * 32, 2 * (32 + 20))
        first = sheet.crop((0, 0, 32, 32))
    with Image.open(sorted((setup["train"] / "ants").iterdir())[0]) as original:
        plain = original.convert("RGB").resize((32, 32))
    assert list(first.getdata()) != list(plain.getdata())  # cropped, flipped or jittered
