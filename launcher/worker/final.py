"""The end of a run: the consolidated model in `final/`, and a fingerprint of the weights."""

from __future__ import annotations

import hashlib
import shutil
from typing import Any

import torch

from launcher.contract.run_folder import RunFolder
from launcher.worker.engines.base import Engine


def save_final(engine: Engine, tokenizer: Any, folder: RunFolder, max_shard_size: str) -> None:
    """Consolidated Hugging Face model + tokenizer in `final/`, written then renamed; safetensors
    files of at most `max_shard_size` (with an index when there are several)."""
    state_dict = engine.full_state_dict()
    tmp = folder.final_in_progress
    if engine.accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        # The model's own tensor names: transformers would otherwise write back the names of
        # the checkpoint it loaded (under ZeRO-3 even legacy LayerNorm gamma/beta).
        engine.unwrapped().save_pretrained(tmp, state_dict=state_dict, safe_serialization=True,
                                           max_shard_size=max_shard_size,
                                           save_original_format=False)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(folder.final, ignore_errors=True)
        tmp.rename(folder.final)
    engine.accelerator.wait_for_everyone()


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over every parameter, in order: equal on all ranks iff the weights are equal."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        digest.update(name.encode())
        digest.update(param.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
