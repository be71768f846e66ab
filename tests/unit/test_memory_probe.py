"""The memory plan of an image or audio model: measured by the probe process on the fake device,
equal to what a real forward pass keeps for backward, and cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from launcher.contract.errors import LaunchWarning
from launcher.contract.reports import DataStats
from launcher.contract.vocabulary import Precision
from launcher.planner import memory_probe
from launcher.tasks.base import EncodedData, build_task
from launcher.worker.probe import saved_bytes
from tests.conftest import REPO
from tests.helpers.plans import planned
from tests.helpers.tiny_models import (
    build_tiny_efficientnet,
    build_tiny_segformer,
    build_tiny_wav2vec2_ctc,
    build_tiny_whisper,
    build_tiny_yolos,
)

IMAGES = REPO / "recipes" / "image-ants-bees.toml"
SPEECH = REPO / "recipes" / "speech-digits.toml"
ASR = REPO / "recipes" / "asr-digits.toml"
DETECTION = REPO / "recipes" / "detect-raccoons.toml"
SEGMENTATION = REPO / "recipes" / "segment-voc.toml"


@pytest.fixture(autouse=True)
def probe_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SFT_LAUNCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def real_saved_bytes(recipe, plan) -> tuple[int, int]:
    """(bytes a real forward of the task's example batch keeps, parameters) of the real model."""
    task = build_task(recipe, plan)
    task.tokenizer = task.load_tokenizer()
    encoded = EncodedData(train=[], eval=[], stats=DataStats(train_rows=0, eval_rows=0),
                        label_names=["a", "b"])
    model = task.load_model(encoded).train()
    torch.manual_seed(0)
    batch = task.example_batch(plan.batch.micro)
    return (saved_bytes(task, model, batch, plan.precision),
            sum(p.numel() for p in model.parameters()))


@pytest.mark.parametrize(("recipe_file", "build"), [(IMAGES, build_tiny_efficientnet),
                                                    (SPEECH, build_tiny_whisper)])
def test_the_probe_measures_what_a_real_forward_keeps(tmp_path: Path, recipe_file: Path,
                                                      build) -> None:
    model = build(tmp_path / "model")
    recipe, plan = planned(recipe_file, model, "train.global_batch_size=6")
    memory = plan.memory
    assert memory is not None and not memory.approximate
    activations, parameters = real_saved_bytes(recipe, plan)
    assert activations > 0
    assert {e.activations_bytes for e in memory.estimates} == {activations}
    assert memory.model_parameters == parameters  # a 2-label head, not the checkpoint's 3


def test_a_ctc_model_is_measured_without_the_values_its_loss_reads(tmp_path: Path) -> None:
    """wav2vec2 reads its labels and attention mask (the CTC loss's lengths, SpecAugment's
    spans), which the fake device has no values for: its inputs alone are measured, within a
    few percent of a real forward with its loss."""
    model = build_tiny_wav2vec2_ctc(tmp_path / "model")
    recipe, plan = planned(ASR, model, "train.global_batch_size=6")
    assert plan.memory is not None
    activations, parameters = real_saved_bytes(recipe, plan)
    assert plan.memory.model_parameters == parameters
    assert plan.memory.estimates[0].activations_bytes == pytest.approx(activations, rel=0.1)


@pytest.mark.parametrize(("recipe_file", "build"), [(DETECTION, build_tiny_yolos),
                                                    (SEGMENTATION, build_tiny_segformer)])
def test_boxes_and_masks_are_measured_at_the_largest_canvas(tmp_path: Path, recipe_file: Path,
                                                            build) -> None:
    """A detector's boxes reach the fake device as a dict of tensors per image; its matcher
    reads their values, so its inputs alone are measured (within a few percent of a real
    forward with its loss). Images at the processor's largest canvas."""
    model = build(tmp_path / "model")
    recipe, plan = planned(recipe_file, model, "train.global_batch_size=4")
    assert plan.memory is not None and not plan.memory.approximate
    activations, parameters = real_saved_bytes(recipe, plan)
    assert plan.memory.model_parameters == parameters
    assert plan.memory.estimates[0].activations_bytes == pytest.approx(activations, rel=0.05)


def test_activations_follow_the_micro_batch_and_precision(tmp_path: Path) -> None:
    model = build_tiny_efficientnet(tmp_path / "model")
    _, three = planned(IMAGES, model, "train.global_batch_size=6")
    _, six = planned(IMAGES, model, "train.global_batch_size=12")
    assert three.batch.micro * 2 == six.batch.micro
    assert six.memory.estimates[0].activations_bytes == pytest.approx(
        2 * three.memory.estimates[0].activations_bytes, rel=0.01)
    _, half = planned(IMAGES, model, "train.global_batch_size=6", "train.precision='bf16'")
    assert half.precision is Precision.BF16
    assert half.memory.estimates[0].activations_bytes < 0.75 * three.memory.estimates[
        0].activations_bytes


def test_a_second_plan_reads_the_cache(tmp_path: Path, probe_cache: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_tiny_efficientnet(tmp_path / "model")
    _, first = planned(IMAGES, model)
    assert len(list((probe_cache / "model-probes").glob("*.json"))) == 1

    def no_probe(*_: object) -> None:
        raise memory_probe.ProbeFailed("the probe ran again")

    monkeypatch.setattr(memory_probe, "_run", no_probe)
    _, again = planned(IMAGES, model, "train.lr=1e-5")  # a setting the probe does not read
    assert again.memory == first.memory
    with pytest.warns(LaunchWarning, match="the probe ran again"):
        _, other = planned(IMAGES, model, "train.global_batch_size=4")  # another micro batch
    assert other.memory is None  # the probe failed: a plan without an estimate, no error


def test_a_model_the_probe_cannot_build_is_a_plan_without_an_estimate_that_says_why(
        tmp_path: Path, probe_cache: Path) -> None:
    model = build_tiny_efficientnet(tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "hidden_dim": -5}))
    with pytest.warns(LaunchWarning, match="no memory estimate: measuring the model failed: "
                      "RuntimeError: .*negative dimension"):
        _, plan = planned(IMAGES, model)
    assert plan.memory is None


def test_the_largest_canvas_is_the_longest_edge_by_the_shortest() -> None:
    from transformers.models.detr.image_processing_pil_detr import DetrImageProcessorPil

    from launcher.tasks.object_detection import largest_canvas

    assert largest_canvas(DetrImageProcessorPil()) == (1333, 800)
    assert largest_canvas(DetrImageProcessorPil(size={"height": 512, "width": 640})) == (640, 512)


def test_a_model_without_a_hidden_size_still_sizes_deepspeeds_buckets(tmp_path: Path) -> None:
    """SegFormer has stages (`hidden_sizes`), no `hidden_size`: its widest stage sizes ZeRO's
    buckets, which DeepSpeed's defaults would make 5e8 elements (2 GB) on every rank; a config
    with neither falls back to its largest parameter's side."""
    from transformers import SegformerConfig

    from launcher.planner.memory import deepspeed_buckets
    from launcher.worker.probe import model_width

    model = build_tiny_segformer(tmp_path / "model")
    _, plan = planned(SEGMENTATION, model, "train.global_batch_size=4")
    widest = max(SegformerConfig.from_pretrained(model).hidden_sizes)
    assert plan.memory is not None and plan.memory.hidden_size == widest
    buckets = deepspeed_buckets(plan.memory.hidden_size, plan.memory.block_parameters)
    assert buckets["reduce_bucket_size"] == widest**2
    assert model_width(object(), 1_000_000) == 1000
