"""What part of a tensor this rank really holds, whatever sharded it."""

from __future__ import annotations

import torch


def local_shard(tensor: torch.Tensor) -> torch.Tensor:
    """The local shard: FSDP2 DTensor -> its local tensor, ZeRO-3 param -> its partition."""
    if hasattr(tensor, "ds_tensor"):
        return tensor.ds_tensor
    if hasattr(tensor, "to_local"):
        return tensor.to_local()
    return tensor
