"""`python -m launcher.worker.probe DIR`: measure a model for the memory plan by a dry run.

The planner counts text models from their config.json (launcher.planner.model_shape); a vision or
speech model has no such formula (convolution stages, a fixed audio window), so the plan asks
this process instead. It builds the run's model with the task's head as the worker would, on
PyTorch's fake device (tensors with shapes and dtypes, no storage: a 70B model costs nothing),
and runs one training micro-batch of the task's `example_batch` through the task's loss under
the plan's precision, summing the bytes of every tensor autograd saves for backward (each
storage once). That is what a rank holds as activations; measured against a real forward it
is the same to the byte. DIR holds the request
(`recipe.json`, `plan.json`, written by `launcher.planner.memory_probe`); the answer is
`DIR/probe.json`, a `ModelProbe`.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import torch
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode

from launcher.contract.plan import ModelProbe, Plan
from launcher.contract.reports import DataStats
from launcher.contract.vocabulary import Precision
from launcher.recipe.schema import Recipe
from launcher.tasks.base import EncodedData, Task, build_task
from launcher.tasks.lora import apply_lora
from launcher.worker.blocks import transformer_blocks

WIDTH_KEYS = ("hidden_size", "d_model", "hidden_dim")
DATA_READ = ("labels", "attention_mask")  # what models read values of, left out if they must be


def saved_bytes(task: Task, model: torch.nn.Module, batch: dict[str, torch.Tensor],
                precision: Precision) -> int:
    """Bytes of the storages autograd keeps from the task's loss on `batch` (each once; the
    model's own weights, which autograd keeps too, are the plan's parameters). Where the model
    reads values the fake device does not have (a CTC loss's label lengths, SpecAugment's masked
    spans from the attention mask), the forward pass of the inputs alone is measured (the loss
    and the masking add a few small tensors)."""
    weights = {t.untyped_storage()._cdata for t in (*model.parameters(), *model.buffers())}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in weights:
            storages[storage._cdata] = max(storages.get(storage._cdata, 0), storage.nbytes())
        return tensor

    half = precision if precision.is_half else Precision.BF16
    with (torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor),
          torch.autocast("cpu", dtype=getattr(torch, half.torch_name),
                         enabled=precision.is_half)):
        try:
            task.loss_sum(model, batch)
        except DataDependentOutputException as err:
            if not _counting(err):  # the model itself read a value: measure its inputs alone
                storages.clear()
                model(**{key: value for key, value in batch.items() if key not in DATA_READ})
    return sum(storages.values())


def _counting(err: Exception) -> bool:
    """Whether the task's own code read a value (the loss's unit count, once the loss is
    built: everything autograd keeps is counted by then), not the model's."""
    frames = [f.filename for f in traceback.extract_tb(err.__traceback__)
              if f"{os.sep}torch{os.sep}" not in f.filename]
    return bool(frames) and f"launcher{os.sep}tasks{os.sep}" in frames[-1]


def measure(recipe: Recipe, plan: Plan) -> ModelProbe:
    """The run's model and one training micro-batch of its task, measured on the fake device."""
    task = build_task(recipe, plan)
    task.tokenizer = task.load_tokenizer()  # type: ignore[attr-defined]
    batch = task.example_batch(plan.batch.micro)
    if batch is None:
        raise ValueError(f"task {recipe.task.kind} has no example batch to measure")
    labels = recipe.task.num_labels or 2  # the data's label count is not read to plan
    encoded = EncodedData(train=[], eval=[], stats=DataStats(train_rows=0, eval_rows=0),
                        label_names=[f"label-{i}" for i in range(labels)])
    model = task.load_model(encoded, meta=True)
    if hasattr(model, "tie_weights"):  # built empty, a tied head is its own tensor until tied
        model.tie_weights()
    model = apply_lora(model, recipe, announce=False)
    parameters = list(model.parameters())
    blocks = [sum(p.numel() for p in block.parameters()) for block in transformer_blocks(model)]
    outside = sum(p.numel() for p in parameters) - sum(blocks)  # FSDP's root unit (embeddings)
    config = model.get_base_model().config if recipe.model.lora else model.config
    largest = max((p.numel() for p in parameters), default=0)
    width = model_width(config, largest)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        model.to_empty(device="cpu")
        model.train()
        activations = saved_bytes(task, model, _fake(batch, mode), plan.precision)
    return ModelProbe(parameters=sum(p.numel() for p in parameters),
                      block_parameters=max(*blocks, outside) if blocks else 0,
                      largest_parameter=largest,
                      activations_bytes=activations, hidden_size=width,
                      trainable=(sum(p.numel() for p in parameters if p.requires_grad)
                                 if recipe.model.lora else None))


def model_width(config: Any, largest_parameter: int) -> int:
    """The model's width, which sizes DeepSpeed's buckets (width^2 elements each): its hidden
    size; the widest of its stages (`hidden_sizes`: SegFormer, ResNet, ConvNeXt); else the side
    of its largest parameter as a square. Never unknown: DeepSpeed's own defaults would allocate
    a 2 GB reduce bucket per rank whatever the model."""
    for key in WIDTH_KEYS:
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    stages = getattr(config, "hidden_sizes", None)
    if isinstance(stages, list | tuple) and stages and all(isinstance(n, int) for n in stages):
        return max(stages)
    return max(math.isqrt(largest_parameter), 1)


def _fake(value: Any, mode: FakeTensorMode) -> Any:
    """The batch with each tensor on the fake device, however nested (a detector's boxes: a
    dict of tensors per image)."""
    if isinstance(value, torch.Tensor):
        return mode.from_tensor(value)
    if isinstance(value, dict):
        return {key: _fake(item, mode) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_fake(item, mode) for item in value)
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher.worker.probe",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("request", type=Path,
                        help="a folder with recipe.json and plan.json; probe.json is written")
    folder = parser.parse_args(argv).request
    recipe = Recipe.model_validate_json((folder / "recipe.json").read_text())
    plan = Plan.read(folder / "plan.json")
    (folder / "probe.json").write_text(measure(recipe, plan).to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
