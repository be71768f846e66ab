"""Recipe names that changed: the old key or value is still read, with a warning naming the new
one (`RecipeDeprecation`, which the CLI prints as one `warning:` line)."""

from __future__ import annotations

import warnings
from typing import Any

from launcher.contract.errors import LaunchWarning
from launcher.contract.vocabulary import TORCH_NAMES


class RecipeDeprecation(LaunchWarning, FutureWarning):
    """A recipe key or value that was renamed: read under its new name, the user told which."""


# [train] keys renamed: old -> new.
RENAMED_TRAIN_KEYS = {"sample_prompts": "generation_prompts",
                      "sample_max_tokens": "generation_max_tokens"}


def _warn(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated: use {new}", RecipeDeprecation, stacklevel=4)


def renamed_train_keys(data: Any) -> Any:
    """A [train] section with each old key moved to its new name."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    for old, new in RENAMED_TRAIN_KEYS.items():
        if old in data:
            _warn(f"train.{old}", f"train.{new}")
            if new in data:
                raise ValueError(f"train.{old} and train.{new} are the same setting: keep "
                                 f"train.{new} only")
            data[new] = data.pop(old)
    return data


def precision_word(value: Any) -> Any:
    """model.dtype's old torch spellings (float32, bfloat16, float16) as train.precision's
    words."""
    old = {name: precision for precision, name in TORCH_NAMES.items()}
    if isinstance(value, str) and value in old:
        _warn(f"model.dtype = {value!r}", f"model.dtype = {old[value].value!r}")
        return old[value]
    return value
