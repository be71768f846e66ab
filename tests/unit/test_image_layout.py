"""The image task's pixels as a convolutional model takes them fastest: channels-last."""

from __future__ import annotations

from pathlib import Path

import torch

from launcher.contract.reports import DataStats
from launcher.tasks.base import EncodedData, build_task
from tests.conftest import REPO
from tests.helpers.plans import planned
from tests.helpers.tiny_models import build_tiny_efficientnet, build_tiny_vit


def test_a_convolutional_model_gets_channels_last_pixels(tmp_path: Path) -> None:
    """EfficientNet's convolutions take channels-last pixels (faster on oneDNN and cuDNN); a
    ViT's one patch convolution keeps the processor's layout. Same values either way."""
    layouts = {}
    for name, build in (("efficientnet", build_tiny_efficientnet), ("vit", build_tiny_vit)):
        recipe, plan = planned(REPO / "recipes" / "image-ants-bees.toml", build(tmp_path / name))
        task = build_task(recipe, plan)
        task.tokenizer = task.load_tokenizer()
        before = task.example_batch(2)["pixel_values"]
        task.load_model(EncodedData(train=[], eval=[], stats=DataStats(train_rows=0, eval_rows=0),
                                 label_names=["a", "b"]))
        after = task.example_batch(2)["pixel_values"]
        assert torch.equal(before, after)
        layouts[name] = after.is_contiguous(memory_format=torch.channels_last)
    assert layouts == {"efficientnet": True, "vit": False}
