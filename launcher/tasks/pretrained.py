"""A checkpoint loaded for fine-tuning: real weights, or the same model on the meta device; a
new head or a shorter window that loads the same way under every strategy (ZeRO-3 included)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from launcher.contract.plan import Plan
from launcher.contract.vocabulary import Precision
from launcher.recipe.schema import Recipe


def pretrained(auto_class: Any, recipe: Recipe, plan: Plan, meta: bool, *,
               new_head: bool = False, cut: tuple[str, ...] = (), **config: Any
               ) -> torch.nn.Module:
    """`auto_class.from_pretrained` of the recipe's model, or with `meta` the same model with
    its parameters on the meta device (buffers stay real: rotary tables, position ids), built
    from the config alone: no weight is read and no memory is taken. `new_head`: tensors of
    another shape than the checkpoint's (a head for another label count) start afresh, the same
    way under every strategy, but those named in `cut`, which keep their leading part (the
    first positions of a shorter window)."""
    options = {"trust_remote_code": recipe.model.trust_remote_code,
               "attn_implementation": recipe.model.attn_implementation}
    dtype = model_dtype(recipe)
    if not meta and new_head and any(Path(plan.model_path).glob("*.safetensors")):
        model_class, model_config, weights, later, frozen = _weights_that_fit(
            auto_class, recipe, plan, config, cut)
        model = model_class.from_pretrained(None, config=model_config, state_dict=weights,
                                            dtype=dtype, **options)
        # transformers re-initialises a module of a new shape after loading (Whisper's encoder
        # and its positions): the cut tensors are copied in once the model is built.
        for name, value in later.items():
            _copy_into(model.get_parameter(name), value)
        for name, parameter in model.named_parameters():  # loading a state dict thaws them
            parameter.requires_grad_(name not in frozen)
        return model
    if not meta:  # (a new head from .bin weights: transformers' own way, not under ZeRO-3)
        return auto_class.from_pretrained(plan.model_path, dtype=dtype, **options, **config,
                                          **({"ignore_mismatched_sizes": True} if new_head
                                             else {}))
    from accelerate import init_empty_weights
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(
        plan.model_path, trust_remote_code=recipe.model.trust_remote_code, **config)
    with init_empty_weights(include_buffers=False):
        return auto_class.from_config(model_config, dtype=dtype, **options)


def _weights_that_fit(auto_class: Any, recipe: Recipe, plan: Plan, config: dict[str, Any],
                      cut: tuple[str, ...]) -> tuple[Any, Any, dict[str, torch.Tensor],
                                                     dict[str, torch.Tensor], set[str]]:
    """The model's class and config; the checkpoint's tensors (its safetensors files) that fit
    the model's shapes (found on a meta-device twin, built outside ZeRO-3's partitioning), by
    checkpoint name; those named in `cut` (by model name) cut to their leading part; and the
    parameters the architecture freezes (Whisper's positions). Other tensors of another shape
    are left out: they start afresh."""
    from safetensors import safe_open
    from transformers import AutoConfig
    from transformers.models.auto.auto_factory import _get_model_class

    model_config = AutoConfig.from_pretrained(
        plan.model_path, trust_remote_code=recipe.model.trust_remote_code, **config)
    model_class = _get_model_class(model_config, auto_class._model_mapping)
    with _unpartitioned(), torch.device("meta"):
        twin = model_class(model_config)
    shapes = {name: tuple(t.shape) for name, t in twin.state_dict().items()}
    prefix = getattr(twin, "base_model_prefix", "")
    kept, cuts = {}, {}
    for file in sorted(Path(plan.model_path).glob("*.safetensors")):
        with safe_open(str(file), "pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (a safe_open handle is no dict)
                full = next((key for key in (name, f"{prefix}.{name}",
                                             name.removeprefix(f"{prefix}.")) if key in shapes),
                            name)  # a checkpoint of the base model, or of another head's
                shape, stored = shapes.get(full), tuple(handle.get_slice(name).get_shape())
                if shape is None or shape == stored:
                    kept[name] = handle.get_tensor(name)
                elif full in cut and all(s <= t for s, t in zip(shape, stored, strict=True)):
                    cuts[full] = handle.get_tensor(name)[tuple(slice(0, s) for s in shape)]
    frozen = {name for name, p in twin.named_parameters() if not p.requires_grad}
    return model_class, model_config, kept, cuts, frozen


def _zero3() -> bool:
    from transformers.integrations import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled()


def _copy_into(parameter: torch.nn.Parameter, value: torch.Tensor) -> None:
    """`value` into a parameter; under ZeRO-3 gathered, written on rank 0, partitioned again."""
    if not _zero3():
        with torch.no_grad():
            parameter.copy_(value)
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters([parameter], modifier_rank=0), torch.no_grad():
        if torch.distributed.get_rank() == 0:
            parameter.copy_(value)


@contextlib.contextmanager
def _unpartitioned() -> Iterator[None]:
    """Modules built here are not partitioned by an active ZeRO-3 `zero.Init`."""
    if not _zero3():
        yield
        return
    from deepspeed.runtime.zero.partition_parameters import (
        restore_init_context,
        shutdown_init_context,
    )

    shutdown_init_context()
    try:
        yield
    finally:
        restore_init_context()


def model_dtype(recipe: Recipe) -> torch.dtype:
    """Weights in fp32 for mixed precision (master copy) unless the recipe says otherwise."""
    wanted = recipe.model.dtype
    return getattr(torch, (Precision.FP32 if wanted == "auto" else wanted).torch_name)
