"""LoRA through peft: wrap a task's model so only the adapters and the task head train."""

from __future__ import annotations

import torch
from accelerate import PartialState

from launcher.recipe.schema import Recipe
from launcher.tasks.registry import task_spec


def apply_lora(model: torch.nn.Module, recipe: Recipe, announce: bool = True) -> torch.nn.Module:
    """`model` with LoRA adapters as `[model.lora]` says; `model` itself when it says nothing.
    `announce`: print the trainable count (rank 0; not for a meta-device twin)."""
    lora = recipe.model.lora
    if lora is None:
        return model
    from peft import LoraConfig, get_peft_model  # imported only here: it takes seconds

    # peft's task type (or the head's modules) makes the head trainable and saved with the
    # adapter.
    spec = task_spec(recipe.task.kind)
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=lora.target_modules,
                        task_type=spec.peft_task_type,
                        modules_to_save=list(spec.lora_head) or None)
    model = get_peft_model(model, config)
    trainable, total = param_counts(model)
    if announce and PartialState().is_main_process:
        print(f"LoRA r={lora.r} alpha={lora.alpha} on {lora.target_modules}: {trainable:,} "
              f"trainable of {total:,} parameters ({100 * trainable / total:.2f}%)", flush=True)
    return model


def param_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
