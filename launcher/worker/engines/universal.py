"""DeepSpeed ZeRO checkpoints at another world size: DeepSpeed's universal checkpoint.

A ZeRO checkpoint holds each rank's flat partitions, so it loads only at the world size it was
written at. To resume at another one, rank 0 converts it with DeepSpeed's `ds_to_universal`
(full fp32 weights and Adam moments per parameter) beside the checkpoint, every rank loads that
with `load_universal`, and the converted copy is deleted. Measured exact: fp32 masters, moments
and step come back bit for bit.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

ACCELERATE_TAG = "pytorch_model"  # the DeepSpeed tag accelerate.save_state writes under


def convert(checkpoint: Path, out: Path) -> None:
    """Write the universal form of `checkpoint` (an accelerate.save_state folder) into `out`."""
    from deepspeed.checkpoint import ds_to_universal

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    ds_to_universal.main(SimpleNamespace(
        input_folder=str(checkpoint / ACCELERATE_TAG), output_folder=str(out / ACCELERATE_TAG),
        num_extract_workers=1, num_merge_workers=1, keep_temp_folder=False, strict=True,
        inject_missing_state=True))  # ZeRO-2 checkpoints of HF models need it
    for path in checkpoint.iterdir():  # accelerate's own files (RNG, registered scheduler)
        if path.is_file() and path.name != "latest":
            shutil.copy2(path, out / path.name)
