"""What image and audio classification share: rows that name a file (or hold its bytes) and a
label, each file checked once when the data is encoded, decoded in `collate` (DataLoader
workers), a new head sized from the label names, and accuracy, macro-F1 and a confusion matrix."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
import torch.nn.functional as F

from launcher.contract.errors import UsageError
from launcher.data.errors import BadRowPolicy, DataError, Origin, handle_bad_row
from launcher.tasks.base import Batch, EncodedData, EvalOutput, Example, Row
from launcher.tasks.file_task import FileTask
from launcher.tasks.pretrained import pretrained

TOP5 = "top5_hits"  # eval rows whose label is among the 5 highest logits

class DecodedClassification(FileTask):
    """One label per decoded file. A subclass names its row field (`field`), its transformers
    Auto class (`auto_model`) and model input (`model_input`), and how a file is checked
    (`check`, returning what an example keeps of it) and batched (`collate`)."""

    field: str  # the canonical row's file field: "image", "audio"
    auto_model: Any  # e.g. AutoModelForImageClassification
    model_input: str  # the model's keyword for the batch: "pixel_values", "input_features"
    invalid: type[ValueError]  # what `check` raises for a file that cannot be used
    cut: tuple[str, ...] = ()  # tensors kept in part when `config_changes` shrinks them

    @abstractmethod
    def check(self, source: str | bytes, origin: str) -> dict[str, Any]:
        """Decode (or probe) one file; raise `invalid` if it cannot be used. The fields it
        returns are kept in the example (a duration, say)."""

    def encode(self, rows: list[Row], skipped: list[DataError] | None = None) -> list[Example]:
        """Where each file is (a path, or its bytes), what `check` keeps of it, and the label
        id if any; a file that fails the check raises, or is skipped into `skipped`."""
        examples = []
        for done, row in enumerate(rows, 1):
            source = row[self.field]
            try:
                kept = self.check(source, origin(source))
            except self.invalid as err:
                refuse_or_skip(err, source, self.recipe.data.on_bad_row, skipped)
                continue
            examples.append({**file_example(source), **kept,
                             **({"labels": row["label"]} if "label" in row else {})})
            if done % 256 == 0:
                self.report_progress(f"{self.field}s checked", done, len(rows))
        return examples

    def load_model(self, encoded: EncodedData, meta: bool = False) -> torch.nn.Module:
        """The checkpoint with a new head sized from the label names (saved in its config)."""
        self.names = names = list(encoded.label_names or [])
        return pretrained(
            self.auto_model, self.recipe, self.plan, meta, new_head=True,
            num_labels=self.recipe.task.num_labels or len(names),
            id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
            cut=self.cut, **self.config_changes())

    def config_changes(self) -> dict[str, Any]:
        """Settings of the checkpoint's config this run changes (none by default)."""
        return {}

    def logits(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """The model on every input of the batch (features, a mask) but the labels."""
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()

    def predict(self, model: torch.nn.Module, batch: Batch, max_new_tokens: int,
                synced: bool = False) -> list[str]:
        """The name of the most likely label of each file."""
        return [self.names[i] for i in self.logits(model, batch).argmax(-1).tolist()]

    def reference(self, row: Row) -> str:
        return self.names[row["label"]]

    def loss_sum(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        labels = batch["labels"]
        return (F.cross_entropy(self.logits(model, batch), labels, reduction="sum"),
                int(labels.numel()))

    @property
    def summed(self) -> tuple[str, ...]:  # type: ignore[override]
        """Top-5 hits, with more than 5 labels."""
        return (TOP5,) if len(getattr(self, "names", ())) > 5 else ()

    def evaluate(self, model: torch.nn.Module, batch: Batch) -> EvalOutput:
        labels = batch["labels"]
        logits = self.logits(model, batch)
        sums = {TOP5: float((logits.topk(5, -1).indices == labels[:, None]).any(-1).sum())
                } if self.summed else {}
        return EvalOutput(loss_sum=float(F.cross_entropy(logits, labels, reduction="sum")),
                          count=int(labels.numel()), predictions=logits.argmax(-1).tolist(),
                          references=labels.tolist(), sums=sums)

    def metrics(self, loss_sum: float, count: int, predictions: list[Any],
                references: list[Any], sums: dict[str, float] | None = None) -> dict[str, Any]:
        """Accuracy, macro-F1, top-5 accuracy (more than 5 labels) and the confusion matrix
        (true name -> predicted name -> count)."""
        from sklearn.metrics import (  # imported here: seconds that planning does not need
            accuracy_score,
            confusion_matrix,
            f1_score,
        )

        scores: dict[str, Any] = {"loss": loss_sum / max(count, 1)}
        if not references:
            return scores
        scores.update(accuracy=float(accuracy_score(references, predictions)),
                      macro_f1=float(f1_score(references, predictions, average="macro")))
        if sums and TOP5 in sums:
            scores["top5_accuracy"] = sums[TOP5] / len(references)
        names = getattr(self, "names", None) or [str(i) for i in range(max(references) + 1)]
        matrix = confusion_matrix(references, predictions, labels=list(range(len(names))))
        scores["confusion"] = {true: {predicted: int(matrix[i][j])
                                      for j, predicted in enumerate(names)}
                               for i, true in enumerate(names)}
        return scores


def origin(source: str | bytes) -> str:
    """How a file is named in messages: its path, or its size when it came as bytes."""
    return source if isinstance(source, str) else f"a file of {len(source):,} bytes"


def file_example(source: str | bytes) -> dict[str, Any]:
    """Where an example's file is: its path, or its bytes (the other one empty)."""
    return {"path": source if isinstance(source, str) else "",
            "bytes": source if isinstance(source, bytes) else b""}


def refuse_or_skip(err: ValueError, source: str | bytes, policy: BadRowPolicy,
                   skipped: list[DataError] | None) -> None:
    """A file that failed its check: one `UsageError` naming it (with no `skipped` list:
    rows to evaluate or predict; or under `data.on_bad_row = "error"`), else counted."""
    bad = DataError(Origin(origin(source), 0, "file"),
                    str(err).removeprefix(f"{origin(source)}: "))
    if skipped is None:
        raise UsageError(f"bad data: {bad}") from None
    try:
        handle_bad_row(bad, policy, skipped)
    except DataError as fatal:
        raise UsageError(f"bad data: {fatal} (or set data.on_bad_row = \"skip\" to skip such "
                         "rows)") from None
