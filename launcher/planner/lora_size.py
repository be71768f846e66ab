"""Trainable parameters of a LoRA fine-tune, from the model's shape (stdlib): rank-r adapters
(r x (in + out) each) on the targeted linear layers, plus the task head, which peft trains in
full. The memory plan sizes gradients and optimizer state with this count, not the model's."""

from __future__ import annotations

from launcher.planner.model_shape import ModelShape
from launcher.recipe.schema import LoraSettings


def lora_trainable(shape: ModelShape, lora: LoraSettings) -> int | None:
    """Adapter + head parameters; None when the shape does not list its linear layers or no
    layer matches `lora.target_modules` (peft matches module names by their last part)."""
    targets = lora.target_modules
    chosen = [(i, o, n) for name, i, o, n in shape.linears
              if targets == "all-linear" or name in targets]
    if not chosen:
        return None
    return sum(lora.r * (i + o) * n for i, o, n in chosen) + shape.head_parameters
