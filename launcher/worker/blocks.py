"""A model's repeated blocks (transformer layers, convolution stages), found from the model:
what FSDP shards one by one and what the memory probe sizes the largest of."""

from __future__ import annotations

import torch


def transformer_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks to shard one by one, found from the model (not a fixed class)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 1]
        blocks = list(max(lists, key=len)) if lists else []
    return blocks
