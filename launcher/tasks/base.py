"""What every task provides to the training loop (`Task`), and its encoded data (`EncodedData`)."""

from __future__ import annotations

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
    from launcher.data.encode.media import Media
from launcher.data.encode.preview import Preview

Batch = dict[str, Any]  # tensors; object detection's "labels": a dict of tensors per image
Row = dict[str, Any]  # a canonical row (launcher.data.formats)
Example = dict[str, Any]  # a tokenized row, as `collate` takes it


@dataclass
class EncodedData:
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
    sums: dict[str, float] = field(default_factory=dict)  # the task's `summed` counts


class Task(ABC):
    """A task: tokenizer, data, model, loss and metrics. The loop knows nothing else."""

    decodes = False  # `collate` reads and decodes files: it runs in DataLoader workers
    summed: tuple[str, ...] = ()  # counts `evaluate` returns in `sums`, added over all ranks
    augments = False  # training examples come to `collate` with an "augment_seed"
    # The model's forward reduces over ranks (DETR-style detectors' loss sums the box count):
    # in evaluation every rank runs as many forwards as the busiest.
    collective_forward = False
    # Evaluation keeps no prediction per row (segmentation sums a confusion matrix): the rows
    # the trackers show are predicted again (`launcher.worker.evaluation.predicted_rows`).
    predicts_shown = False

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

    def example_batch(self, rows: int) -> Batch | None:
        """The largest batch of `rows` training rows the task makes (blank images at the
        processor's size, silent recordings of the longest length), which the memory plan's
        probe trains on the fake device (`launcher.worker.probe`; the task's `tokenizer` is
        loaded); None where the plan sizes the model from its config (text)."""
        return None

    @classmethod
    @abstractmethod
    def preview(cls, row: Row, tokenizer: Any, recipe: Recipe, names: list[str]) -> Preview:
        """One canonical row as training encodes it, loss-bearing parts marked (`sft-launch
        preview`: the tokenizer only, no plan, no model); label ids named by `names`."""

    @abstractmethod
    def encode_data(self, tokenizer: Any) -> EncodedData: ...

    @abstractmethod
    def encode(self, rows: list[Row]) -> list[Example]:
        """Canonical rows tokenized as training does (`encode_data` encodes with it); rows without
        labels (to predict) give examples without labels, which `collate` takes too."""

    def prompts(self, rows: list[Row]) -> list[Example]:
        """What `predict` starts from for each row: its training encoding by default."""
        return self.encode(rows)

    def media(self, example: Example) -> Media | None:
        """What trackers show of an eval example beside its reference and prediction: its
        picture or sound (None: text, shown by the reference alone)."""
        return None

    def shown(self, example: Example, reference: Any, prediction: Any) -> list[Any] | None:
        """The eval examples table's row of one eval example (input, reference, prediction):
        its `media` beside the two as they are (label ids named); None: no table (text)."""
        media = self.media(example)
        return None if media is None else [media, reference, prediction]

    @abstractmethod
    def predict(self, model: torch.nn.Module, batch: Batch, max_new_tokens: int,
                synced: bool = False) -> list[Any]:
        """Each row's prediction, readable: a label name, a tag per word, or generated text
        (greedy, at most `max_new_tokens`: causal LM only), for a `collate`d batch of `prompts`.
        `synced`: every rank generates together (a sharded model), to the longest's end."""

    def written(self, predicted: list[Any], rows: list[Row], folder: Path) -> list[Any]:
        """What `predictions-<name>.jsonl` holds of each row's prediction: the prediction
        itself; a task whose predictions are pictures (masks) writes them into `folder` and
        gives their paths."""
        return predicted

    def generation_prompts(self, eval_examples: Sequence[Example]) -> list[tuple[Example, Any]]:
        """The prompts `train.generation_prompts` names, with their references: tasks that
        generate text (causal LM) have some; the others none."""
        return []

    @abstractmethod
    def reference(self, row: Row) -> Any:
        """What a labelled row says `predict` should give (None: nothing to compare to)."""

    @abstractmethod
    def load_model(self, encoded: EncodedData, meta: bool = False) -> torch.nn.Module:
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
                references: list[Any], sums: dict[str, float] | None = None
                ) -> dict[str, float]:
        """The task's scores of an evaluation: the loss summed and counted, every row's
        prediction and reference (in eval order), and the `summed` counts over all ranks."""

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
        yield on_device(task.collate(chunk), device)


def on_device(batch: Batch, device: torch.device) -> Batch:
    """The batch's tensors on `device`, those of a list of dicts (detection targets) too."""
    return {key: [{k: t.to(device) for k, t in item.items()} for item in value]
            if isinstance(value, list) else value.to(device) for key, value in batch.items()}


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
        for key, value in out.sums.items():
            total.sums[key] = total.sums.get(key, 0.0) + value
    return total
