"""The plan's LoRA parameter count from config.json alone, against peft on the real model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher.planner.lora_size import lora_trainable
from launcher.planner.model_shape import read_model_shape
from launcher.recipe.schema import LoraSettings

LLAMA_GQA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64,
             "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 160,
             "num_hidden_layers": 2, "vocab_size": 300, "max_position_embeddings": 128}


@pytest.mark.parametrize("targets", ["all-linear", ["q_proj", "v_proj"], ["down_proj"]])
@pytest.mark.parametrize("task", ["causal_lm", "sequence_classification"])
def test_count_equals_peft_on_the_model(tmp_path: Path, targets, task: str) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, LlamaConfig

    (tmp_path / "config.json").write_text(json.dumps(LLAMA_GQA))
    shape = read_model_shape(tmp_path, task=task, num_labels=3)
    lora = LoraSettings(r=4, target_modules=targets)
    auto = AutoModelForCausalLM if task == "causal_lm" else AutoModelForSequenceClassification
    torch.manual_seed(0)
    model = auto.from_config(LlamaConfig(**LLAMA_GQA, num_labels=3))
    peft_task = "CAUSAL_LM" if task == "causal_lm" else "SEQ_CLS"
    model = get_peft_model(model, LoraConfig(r=4, target_modules=targets, task_type=peft_task))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert lora_trainable(shape, lora) == trainable
    assert sum(p.numel() for p in model.parameters()) == shape.num_parameters + trainable


def test_unknown_targets_or_families_are_not_guessed(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_GQA))
    shape = read_model_shape(tmp_path, task="causal_lm")
    assert lora_trainable(shape, LoraSettings(target_modules=["no_such_layer"])) is None
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba", "hidden_size": 64,
                                                      "num_hidden_layers": 2,
                                                      "num_attention_heads": 4,
                                                      "vocab_size": 300}))
    assert lora_trainable(read_model_shape(tmp_path), LoraSettings()) is None
