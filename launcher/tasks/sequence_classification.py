"""Sequence classification: fine-tune a pretrained encoder (BERT & co.) to label texts."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score
from transformers import AutoModelForSequenceClassification

from launcher.data.encode.preview import Preview, Segment, label_name
from launcher.data.splits import load_splits
from launcher.recipe.schema import Recipe
from launcher.tasks.base import Batch, EncodedData, EvalOutput, Example, Row, Task
from launcher.tasks.pretrained import pretrained


class SequenceClassification(Task):
    """Text (or text pair) -> one label; metrics: accuracy and macro-F1."""

    @classmethod
    def preview(cls, row: Row, tokenizer: Any, recipe: Recipe, names: list[str]) -> Preview:
        """The row's tokens and its label (the loss is on the label)."""
        encoded = tokenizer(row["text"], row.get("text_pair"), truncation=True,
                            max_length=recipe.data.max_length)
        tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
        return Preview([Segment(" ".join(tokens), False)], len(tokens), None,
                       f"label: {label_name(names, row['label'])}")

    def encode_data(self, tokenizer: Any) -> EncodedData:
        self.tokenizer = tokenizer
        splits = load_splits(self.recipe)
        labels = splits.label_map
        names = list(labels.names) if labels is not None else None
        return EncodedData(train=self.encode(splits.train), eval=self.encode(splits.eval),
                        label_names=names, stats=splits.stats)

    def encode(self, rows: list[Row]) -> list[Example]:
        """Text (and text pair) truncated to `data.max_length` tokens; the label id if any."""
        if not rows:
            return []
        texts = [row["text"] for row in rows]
        pairs = [row.get("text_pair") for row in rows]
        encoded = self.tokenizer(texts, pairs if any(pairs) else None, truncation=True,
                                 max_length=self.recipe.data.max_length)
        return [
            {"input_ids": ids, "attention_mask": mask,
             **({"labels": row["label"]} if "label" in row else {})}
            for ids, mask, row in zip(encoded["input_ids"], encoded["attention_mask"], rows,
                                      strict=True)
        ]

    def load_model(self, encoded: EncodedData, meta: bool = False) -> torch.nn.Module:
        self.names = names = list(encoded.label_names or [])
        return pretrained(
            AutoModelForSequenceClassification, self.recipe, self.plan, meta,
            num_labels=self.recipe.task.num_labels or len(names),
            id2label=dict(enumerate(names)) if names else None,
            label2id={n: i for i, n in enumerate(names)} if names else None,
        )

    def collate(self, examples: list[dict[str, Any]]) -> Batch:
        return dict(self.tokenizer.pad(examples, return_tensors="pt"))

    def predict(self, model: torch.nn.Module, batch: Batch, max_new_tokens: int,
                synced: bool = False) -> list[str]:
        """The name of the most likely label of each row."""
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return [self.names[i] for i in logits.argmax(-1).tolist()]

    def reference(self, row: Row) -> str:
        return self.names[row["label"]]

    def loss_sum(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        labels = batch["labels"]
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return F.cross_entropy(logits.float(), labels, reduction="sum"), int(labels.numel())

    def evaluate(self, model: torch.nn.Module, batch: Batch) -> EvalOutput:
        labels = batch["labels"]
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = F.cross_entropy(logits.float(), labels, reduction="sum")
        return EvalOutput(loss_sum=float(loss), count=int(labels.numel()),
                          predictions=logits.argmax(-1).tolist(), references=labels.tolist())

    def metrics(self, loss_sum: float, count: int, predictions: list[Any],
                references: list[Any], sums: dict[str, float] | None = None) -> dict[str, float]:
        return {
            "loss": loss_sum / max(count, 1),
            "accuracy": float(accuracy_score(references, predictions)),
            "macro_f1": float(f1_score(references, predictions, average="macro")),
        }
