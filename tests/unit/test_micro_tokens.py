"""The token budget per micro-batch the plan picks: CPU default under DDP, off otherwise."""

from __future__ import annotations

import pytest

from launcher.contract.errors import RecipeError
from launcher.contract.vocabulary import Device, Strategy
from launcher.planner.batch import CPU_MICRO_TOKENS, micro_token_budget
from launcher.recipe.schema import Recipe


def recipe(kind: str = "causal_lm", **train: object) -> Recipe:
    return Recipe.model_validate({"model": {"path": "unused"}, "task": {"kind": kind},
                                  "data": {"train": ["unused.jsonl"]}, "train": train})


@pytest.mark.parametrize(("train", "device", "strategy", "budget"), [
    ({}, Device.CPU, Strategy.DDP, CPU_MICRO_TOKENS),
    ({}, Device.CUDA, Strategy.DDP, None),
    ({}, Device.CPU, Strategy.FSDP, None),
    ({}, Device.CPU, Strategy.ZERO3, None),
    ({"micro_batch_tokens": 0}, Device.CPU, Strategy.DDP, None),
    ({"micro_batch_tokens": 4096}, Device.CUDA, Strategy.DDP, 4096),
])
def test_budget(train: dict, device: Device, strategy: Strategy, budget: int | None) -> None:
    assert micro_token_budget(recipe(**train), device, strategy, "r.toml") == budget


def test_budget_under_a_sharded_strategy_is_an_error() -> None:
    with pytest.raises(RecipeError, match="needs strategy ddp, not zero2"):
        micro_token_budget(recipe(micro_batch_tokens=512), Device.CPU, Strategy.ZERO2, "r.toml")


@pytest.mark.parametrize("kind", ["image_classification", "audio_classification",
                                  "speech_recognition"])
def test_tasks_batching_rows_take_no_token_budget(kind: str) -> None:
    assert micro_token_budget(recipe(kind), Device.CPU, Strategy.DDP, "r.toml") is None
    with pytest.raises(RecipeError, match=f"{kind} batches whole rows, not tokens"):
        micro_token_budget(recipe(kind, micro_batch_tokens=512), Device.CPU, Strategy.DDP,
                           "r.toml")
