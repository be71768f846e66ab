"""Token classification (NER): tag every word of a pre-split sentence with a BIO label."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from seqeval.metrics import accuracy_score, classification_report
from transformers import AutoModelForTokenClassification, AutoTokenizer

from launcher.contract.errors import UsageError
from launcher.data.encode.preview import Preview, Segment, label_name
from launcher.data.splits import load_splits
from launcher.recipe.schema import Recipe
from launcher.tasks.base import Batch, EncodedData, EvalOutput, Example, Row, Task
from launcher.tasks.pretrained import pretrained

IGNORE_INDEX = -100
OUTSIDE = "O"
NO_WORD = -2  # word_starts padding in a batch (-1 is a word left without a subword)


def align_labels(word_ids: list[int | None], tags: list[int]) -> tuple[list[int], list[int]]:
    """Subword labels (the first subword of a word carries its tag, the rest -100) and, per word,
    the position of its first subword (-1 when truncation or the tokenizer left it none)."""
    labels, starts = [], [-1] * len(tags)
    previous = None
    for position, word in enumerate(word_ids):
        first = word is not None and word != previous
        labels.append(tags[word] if first else IGNORE_INDEX)
        if first:
            starts[word] = position
        previous = word
    return labels, starts


def word_predictions(predicted: list[int], starts: list[int], names: list[str]) -> list[str]:
    """Word-level tags from subword predictions: each word's first subword, "O" if it has none."""
    return [names[predicted[s]] if s >= 0 else OUTSIDE for s in starts]


class TokenClassification(Task):
    """Words -> one tag each; metrics: entity-level precision/recall/F1 (seqeval) per type."""

    def load_tokenizer(self) -> Any:
        tokenizer = AutoTokenizer.from_pretrained(
            self.plan.tokenizer_path, trust_remote_code=self.recipe.model.trust_remote_code
        )
        if not tokenizer.is_fast:
            raise UsageError(f"token classification needs a fast tokenizer (word_ids()); "
                             f"{self.plan.tokenizer_path} has none")
        return tokenizer

    @classmethod
    def preview(cls, row: Row, tokenizer: Any, recipe: Recipe, names: list[str]) -> Preview:
        """Subword tokens, each word's first subword marked with its tag (it carries loss)."""
        encoded = tokenizer(row["tokens"], is_split_into_words=True, truncation=True,
                            max_length=recipe.data.max_length)
        tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
        segments, previous, tagged = [], None, 0
        for position, (token, word) in enumerate(zip(tokens, encoded.word_ids(), strict=True)):
            if position:
                segments.append(Segment(" ", False))
            first = word is not None and word != previous
            segments.append(Segment(f"{token}/{label_name(names, row['tags'][word])}", True)
                            if first else Segment(token, False))
            tagged += first
            previous = word
        return Preview(segments, len(tokens), tagged,
                       "the first subword of each word carries its tag")

    def encode_data(self, tokenizer: Any) -> EncodedData:
        self.tokenizer = tokenizer
        splits = load_splits(self.recipe)
        names = list(splits.label_map.names) if splits.label_map else []
        train, evaluation = self.encode(splits.train), self.encode(splits.eval)
        # A sentence was cut when its last word kept no subword.
        truncated = sum(example["word_starts"][-1] < 0 for example in [*train, *evaluation])
        return EncodedData(train=train, eval=evaluation, label_names=names,
                        stats=dataclasses.replace(splits.stats, truncated=truncated))

    def encode(self, rows: list[Row]) -> list[Example]:
        """Words to subwords (truncated to `data.max_length`), each word's first subword
        (`word_starts`) and, for tagged rows, its tag on that subword (`labels`)."""
        if not rows:
            return []
        encoded = self.tokenizer([row["tokens"] for row in rows], is_split_into_words=True,
                                 truncation=True, max_length=self.recipe.data.max_length)
        examples = []
        for index, row in enumerate(rows):
            tags = row.get("tags")
            labels, starts = align_labels(encoded.word_ids(index),
                                          tags or [IGNORE_INDEX] * len(row["tokens"]))
            example = {"input_ids": encoded["input_ids"][index],
                       "attention_mask": encoded["attention_mask"][index], "word_starts": starts}
            examples.append(example | ({"labels": labels, "tags": tags} if tags is not None
                                       else {}))
        return examples

    def load_model(self, encoded: EncodedData, meta: bool = False) -> torch.nn.Module:
        """The encoder with a fresh tagging head; its tag names also decode eval predictions."""
        self.names = names = list(encoded.label_names or [])
        return pretrained(
            AutoModelForTokenClassification, self.recipe, self.plan, meta,
            num_labels=len(names),
            id2label=dict(enumerate(names)),
            label2id={name: i for i, name in enumerate(names)},
        )

    def collate(self, examples: list[dict[str, Any]]) -> Batch:
        pads = {"input_ids": self.tokenizer.pad_token_id, "attention_mask": 0,
                "labels": IGNORE_INDEX, "word_starts": NO_WORD, "tags": IGNORE_INDEX}
        batch = {}
        for key, pad in pads.items():
            if key not in examples[0]:  # rows to predict have no labels or tags
                continue
            longest = max(len(e[key]) for e in examples)
            batch[key] = torch.tensor([e[key] + [pad] * (longest - len(e[key]))
                                       for e in examples])
        return batch

    def predict(self, model: torch.nn.Module, batch: Batch, max_new_tokens: int,
                synced: bool = False) -> list[list[str]]:
        """The tag of each word: its first subword's most likely tag ("O" if it has none)."""
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return [word_predictions(predicted, [s for s in starts if s != NO_WORD], self.names)
                for predicted, starts in zip(logits.argmax(-1).tolist(),
                                             batch["word_starts"].tolist(), strict=True)]

    def reference(self, row: Row) -> list[str]:
        return [self.names[tag] for tag in row["tags"]]

    def count_units(self, example: dict[str, Any]) -> int:
        """Words that carry loss (their first subword survived truncation)."""
        return sum(1 for label in example["labels"] if label != IGNORE_INDEX)

    def loss_sum(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"]
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(),
                               ignore_index=IGNORE_INDEX, reduction="sum")
        return loss, int((labels != IGNORE_INDEX).sum())

    def evaluate(self, model: torch.nn.Module, batch: Batch) -> EvalOutput:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"]
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(),
                               ignore_index=IGNORE_INDEX, reduction="sum")
        predictions, references = [], []
        for predicted, starts, tags in zip(logits.argmax(-1).tolist(),
                                           batch["word_starts"].tolist(),
                                           batch["tags"].tolist(), strict=True):
            words = sum(1 for tag in tags if tag != IGNORE_INDEX)
            predictions.append(word_predictions(predicted, starts[:words], self.names))
            references.append([self.names[tag] for tag in tags[:words]])
        return EvalOutput(loss_sum=float(loss), count=int((labels != IGNORE_INDEX).sum()),
                          predictions=predictions, references=references)

    def metrics(self, loss_sum: float, count: int, predictions: list[Any],
                references: list[Any], sums: dict[str, float] | None = None) -> dict[str, Any]:
        """Overall entity-level scores (conlleval-compatible) plus a per-entity-type table."""
        scores: dict[str, Any] = {"loss": loss_sum / max(count, 1)}
        if not references:
            return scores
        report = classification_report(references, predictions, output_dict=True,
                                       zero_division=0)
        overall = report.pop("micro avg")
        scores.update(precision=float(overall["precision"]), recall=float(overall["recall"]),
                      f1=float(overall["f1-score"]),
                      accuracy=float(accuracy_score(references, predictions)))
        scores["per_entity"] = {
            kind: {"precision": float(row["precision"]), "recall": float(row["recall"]),
                   "f1": float(row["f1-score"]), "support": int(row["support"])}
            for kind, row in report.items() if not kind.endswith(" avg")
        }
        return scores
