"""What training sees, example by example: a recipe's rows tokenized, the loss-bearing text marked.

Each task previews a row as its own encode path does (`Task.preview`): a chat row through its
template, so the marked text is exactly what carries loss; a classified text as its tokens and
label; tagged words as subword tokens, each word's first subword marked with its tag. Needs the
tokenizer only: no model, no process group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from launcher.contract.errors import UsageError
from launcher.data.encode.chat import IGNORE_INDEX, Example
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
        counts = [f"{self.tokens} tokens"] if self.tokens else []
        if self.loss_tokens is not None:
            counts.append(f"{self.loss_tokens} with loss")
        return ", ".join(counts + ([self.note] if self.note else []))

    def bracketed(self) -> str:
        """The text with each loss-bearing run in ``[[...]]`` (for output to a file or pipe)."""
        return "".join(f"[[{s.text}]]" if s.loss else s.text for s in self.segments)


def load_processor(recipe: Recipe, path: str) -> Any:
    """The recipe's tokenizer (or image processor, feature extractor: its task's), or a
    `UsageError` saying why it cannot be loaded."""
    from launcher.tasks.registry import task_class

    try:
        return task_class(recipe.task.kind).load_processor(path, recipe.model.trust_remote_code)
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot load the tokenizer or processor from {path}: {err}") from None


def preview_rows(rows: Sequence[dict[str, Any]], tokenizer: PreTrainedTokenizerBase,
                 recipe: Recipe, label_names: Sequence[str] | None = None) -> list[Preview]:
    """One `Preview` per canonical row of `recipe`'s task (label ids named by `label_names`)."""
    from launcher.tasks.registry import task_class

    task = task_class(recipe.task.kind)
    return [task.preview(row, tokenizer, recipe, list(label_names or [])) for row in rows]


def preview_picture(rows: Sequence[dict[str, Any]], tokenizer: Any, recipe: Recipe,
                    label_names: Sequence[str] | None, out: Path) -> bool:
    """The rows drawn as the model sees them into the PNG `out`, by their task (images:
    a contact sheet; audio: log-mel spectrograms); False for tasks without pictures."""
    from launcher.tasks.registry import task_class

    return task_class(recipe.task.kind).preview_picture(list(rows), tokenizer, recipe,
                                                        list(label_names or []), out)


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


def label_name(names: list[str], label: int) -> str:
    """A label id's name (the id itself when there are no names)."""
    return names[label] if 0 <= label < len(names) else str(label)
