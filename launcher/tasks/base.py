"""What every task provides to the training loop (`Task`), and what it prepares (`Prepared`)."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from launcher.contract.plan import Plan
from launcher.contract.reports import DataStats
from launcher.recipe.schema import Recipe
from launcher.tasks.registry import task_class

if TYPE_CHECKING:
    from launcher.data.preview import Preview

Batch = dict[str, torch.Tensor]
Row = dict[str, Any]  # a canonical row (launcher.data.formats)
Example = dict[str, Any]  # a tokenized row, as `collate` takes it


@dataclass
class Prepared:
    """Tokenized train/eval examples plus what was learned from the data."""

    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    stats: DataStats
    label_names: list[str] | None = None


@dataclass
class EvalOutput:
    """One eval batch: summed loss and its count, plus predictions for the task's metrics."""

    loss_sum: float
    count: int
    predictions: list[Any] = field(default_factory=list)
    references: list[Any] = field(default_factory=list)


class Task(ABC):
    """A task: tokenizer, data, model, loss and metrics. The loop knows nothing else."""

    decodes = False  # `collate` reads and decodes files: it runs in DataLoader workers
    augments = False  # training examples come to `collate` with an "augment_seed"

    def __init__(self, recipe: Recipe, plan: Plan) -> None:
        self.recipe = recipe
        self.plan = plan
        # (what, done, total) while preprocessing; the worker points it at the event log.
        self.report_progress: Callable[[str, int, int], None] = lambda *_: None

    @classmethod
    def load_processor(cls, path: str, trust_remote_code: bool = False) -> Any:
        """What turns rows into model inputs, from `path`: a tokenizer here; an image processor
        or a feature extractor for the tasks that decode files (`preview` loads it alone)."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)

    @classmethod
    def preview_picture(cls, rows: list[Row], tokenizer: Any, recipe: Recipe,
                        names: list[str], out: Path) -> bool:
        """Draw the rows as the model sees them into the PNG `out` (images, spectrograms);
        False when the task has no picture (text)."""
        return False

    def load_tokenizer(self) -> Any:
        """The run's processor (`load_processor` of the plan's tokenizer path)."""
        return self.load_processor(self.plan.tokenizer_path, self.recipe.model.trust_remote_code)

    @classmethod
    @abstractmethod
    def preview(cls, row: Row, tokenizer: Any, recipe: Recipe, names: list[str]) -> Preview:
        """One canonical row as training encodes it, loss-bearing parts marked (`sft-launch
        preview`: the tokenizer only, no plan, no model); label ids named by `names`."""

    @abstractmethod
    def prepare(self, tokenizer: Any) -> Prepared: ...

    @abstractmethod
    def encode(self, rows: list[Row]) -> list[Example]:
        """Canonical rows tokenized as training does (`prepare` encodes with it); rows without
        labels (to predict) give examples without labels, which `collate` takes too."""

    def prompts(self, rows: list[Row]) -> list[Example]:
        """What `predict` starts from for each row: its training encoding by default."""
        return self.encode(rows)

    @abstractmethod
    def predict(self, model: torch.nn.Module, batch: Batch, max_new_tokens: int,
                synced: bool = False) -> list[Any]:
        """Each row's prediction, readable: a label name, a tag per word, or generated text
        (greedy, at most `max_new_tokens`: causal LM only), for a `collate`d batch of `prompts`.
        `synced`: every rank generates together (a sharded model), to the longest's end."""

    def sample_prompts(self, eval_examples: Sequence[Example]) -> list[tuple[Example, Any]]:
        """The prompts `train.sample_prompts` names, with their references: tasks that
        generate text (causal LM) have some; the others none."""
        return []

    @abstractmethod
    def reference(self, row: Row) -> Any:
        """What a labelled row says `predict` should give (None: nothing to compare to)."""

    @abstractmethod
    def load_model(self, prepared: Prepared, meta: bool = False) -> torch.nn.Module:
        """The pretrained model with the task's head; `meta`: the same architecture with no
        weights (parameters on the meta device, for a sharded load)."""

    @abstractmethod
    def collate(self, examples: list[dict[str, Any]]) -> Batch: ...

    @abstractmethod
    def loss_sum(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        """Summed loss over the batch's loss-bearing units (samples or tokens) and their count."""

    @abstractmethod
    def evaluate(self, model: torch.nn.Module, batch: Batch) -> EvalOutput: ...

    @abstractmethod
    def metrics(self, loss_sum: float, count: int, predictions: list[Any],
                references: list[Any]) -> dict[str, float]: ...

    def count_units(self, example: dict[str, Any]) -> int:
        """Loss-bearing units in one example (1 sample by default)."""
        return 1

    def tokens_in(self, example: dict[str, Any]) -> int:
        return len(example["input_ids"])

    def computed_in(self, batch: Batch) -> int:
        """Tokens a collated batch computes, padding included."""
        return batch["input_ids"].numel()

    def loader_workers(self, recipe: Recipe) -> int:
        """DataLoader worker processes that collate training steps ahead: `data.loader_workers`,
        else 2 for a task that decodes files and 0 (collate in the loop) for the others."""
        workers = recipe.data.loader_workers
        return workers if workers is not None else (2 if self.decodes else 0)

    def computed_tokens(self, examples: Sequence[dict[str, Any]]) -> int:
        """Tokens one forward pass over `examples` computes: each padded to the longest."""
        return len(examples) * max(self.tokens_in(e) for e in examples)


def build_task(recipe: Recipe, plan: Plan) -> Task:
    """The task object of the recipe's `task.kind`."""
    return task_class(recipe.task.kind)(recipe, plan)


def batches(task: Task, examples: Sequence[Example], size: int,
            device: torch.device) -> Iterator[Batch]:
    """`examples` in order, `size` at a time, collated by the task, on `device`."""
    for start in range(0, len(examples), size):
        chunk = [examples[i] for i in range(start, min(start + size, len(examples)))]
        yield {key: value.to(device) for key, value in task.collate(chunk).items()}


def evaluate_examples(task: Task, model: torch.nn.Module, examples: Sequence[Example],
                      size: int, device: torch.device,
                      autocast: Callable[[], AbstractContextManager],
                      progress: Callable[[], None] = lambda: None) -> EvalOutput:
    """`task.evaluate` over `examples` in batches of `size` (the training loop's eval, and
    `sft-launch eval`): losses and counts summed, predictions and references in order.
    `progress()` is called before each batch."""
    total = EvalOutput(loss_sum=0.0, count=0)
    for batch in batches(task, examples, size, device):
        progress()
        with autocast():
            out = task.evaluate(model, batch)
        total.loss_sum += out.loss_sum
        total.count += out.count
        total.predictions.extend(out.predictions)
        total.references.extend(out.references)
    return total


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
    dtype = model_dtype(recipe, plan)
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


def model_dtype(recipe: Recipe, plan: Plan) -> torch.dtype:
    """Weights in fp32 for mixed precision (master copy) unless the recipe says otherwise."""
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    return names.get(recipe.model.dtype, torch.float32)
