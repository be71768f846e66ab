"""What training sees, example by example: a recipe's rows tokenized, the loss-bearing text marked.

Causal-LM rows go through the training encode path (`launcher.data.chat.encode_rows`: the chat
template, tools, `train_on`, truncation), so the marked text is exactly what carries loss.
Classification rows show their tokens and label; token-classification rows their subword tokens,
each word's first subword marked with its tag (the one that carries loss). Needs the tokenizer
only: no model, no process group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from launcher.data.chat import IGNORE_INDEX, ChatTemplateError, Example, encode_rows
from launcher.errors import UsageError
from launcher.recipe.schema import Recipe


@dataclass
class Segment:
    """A run of an example's text, with or without loss."""

    text: str
    loss: bool


@dataclass
class Preview:
    """One example: its text in runs, its token count and loss-bearing token count (None when
    the loss is on a label, not on tokens), and a note (the label, a truncation, an error)."""

    segments: list[Segment] = field(default_factory=list)
    tokens: int = 0
    loss_tokens: int | None = None
    note: str = ""

    def summary(self) -> str:
        """``"123 tokens, 45 with loss"`` and the note."""
        counts = [f"{self.tokens} tokens"]
        if self.loss_tokens is not None:
            counts.append(f"{self.loss_tokens} with loss")
        return ", ".join(counts + ([self.note] if self.note else []))

    def bracketed(self) -> str:
        """The text with each loss-bearing run in ``[[...]]`` (for output to a file or pipe)."""
        return "".join(f"[[{s.text}]]" if s.loss else s.text for s in self.segments)


def load_tokenizer(path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The recipe's tokenizer, or a `UsageError` saying why it cannot be loaded."""
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot load the tokenizer from {path}: {err}") from None


def preview_rows(rows: Sequence[dict[str, Any]], tokenizer: PreTrainedTokenizerBase,
                 recipe: Recipe, label_names: Sequence[str] | None = None) -> list[Preview]:
    """One `Preview` per canonical row of `recipe`'s task (label ids named by `label_names`)."""
    kind = recipe.task.kind
    if kind == "causal_lm":
        return [_causal_lm(row, tokenizer, recipe) for row in rows]
    names = list(label_names or [])
    if kind == "sequence_classification":
        return [_classification(row, tokenizer, recipe.data.max_length, names) for row in rows]
    return [_token_classification(row, tokenizer, recipe.data.max_length, names) for row in rows]


def loss_segments(tokenizer: PreTrainedTokenizerBase, example: Example) -> list[Segment]:
    """An example's tokens decoded in runs of loss-bearing and other tokens."""
    flagged = zip(example["input_ids"], [label != IGNORE_INDEX for label in example["labels"]],
                  strict=True)
    segments = []
    for loss, run in groupby(flagged, key=lambda pair: pair[1]):
        text = tokenizer.decode([token for token, _ in run], skip_special_tokens=False,
                                clean_up_tokenization_spaces=False)
        segments.append(Segment(text, loss))
    return segments


def _causal_lm(row: dict[str, Any], tokenizer: PreTrainedTokenizerBase,
               recipe: Recipe) -> Preview:
    data, task = recipe.data, recipe.task
    try:
        examples, stats = encode_rows([row], tokenizer, data.max_length, data.truncation,
                                      task.train_on, task.chat_template)
    except ChatTemplateError as err:
        return Preview(note=f"not trainable: {err}")
    if not examples:
        why = "longer than" if data.truncation == "drop" else "no loss-bearing token fits in"
        return Preview(note=f"dropped: {why} data.max_length = {data.max_length}")
    example = examples[0]
    loss = sum(label != IGNORE_INDEX for label in example["labels"])
    note = f"truncated to data.max_length = {data.max_length}" if stats.truncated else ""
    return Preview(loss_segments(tokenizer, example), len(example["input_ids"]), loss, note)


def _classification(row: dict[str, Any], tokenizer: PreTrainedTokenizerBase, max_length: int,
                    names: list[str]) -> Preview:
    encoded = tokenizer(row["text"], row.get("text_pair"), truncation=True, max_length=max_length)
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    label = _name(names, row["label"])
    return Preview([Segment(" ".join(tokens), False)], len(tokens), None, f"label: {label}")


def _token_classification(row: dict[str, Any], tokenizer: PreTrainedTokenizerBase,
                          max_length: int, names: list[str]) -> Preview:
    encoded = tokenizer(row["tokens"], is_split_into_words=True, truncation=True,
                        max_length=max_length)
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    segments, previous, tagged = [], None, 0
    for position, (token, word) in enumerate(zip(tokens, encoded.word_ids(), strict=True)):
        if position:
            segments.append(Segment(" ", False))
        first = word is not None and word != previous
        segments.append(Segment(f"{token}/{_name(names, row['tags'][word])}", True) if first
                        else Segment(token, False))
        tagged += first
        previous = word
    return Preview(segments, len(tokens), tagged, "the first subword of each word carries its tag")


def _name(names: list[str], label: int) -> str:
    """A label id's name (the id itself when there are no names)."""
    return names[label] if 0 <= label < len(names) else str(label)
