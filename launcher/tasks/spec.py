"""What the control plane knows of a task kind, torch-free: its data formats, metric, head, PEFT
type and what `predict` writes (`TaskSpec`), and the vocabulary those are said in (`Head`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Head(StrEnum):
    """What a task's head computes: what the parameter count adds and the memory plan's logits."""

    LM = "lm"  # vocabulary logits per token (a language-model head)
    TOKEN = "token"  # label logits per token (a classifier on every position)
    SEQUENCE = "sequence"  # label logits per example (a classifier on a pooled representation)
    NONE = "none"  # the bare model


@dataclass(frozen=True)
class TaskSpec:
    """A task kind as the control plane sees it; its training code is `implementation`."""

    kind: str
    summary: str  # one line: what is fine-tuned to do what
    implementation: str  # "module:Class" of its `launcher.tasks.base.Task`, imported on demand
    formats: tuple[str, ...]  # the data formats it reads (`launcher.data.formats`), default first
    main_metric: str  # what a sweep ranks by and the summary leads with
    higher_is_better: bool
    head: Head
    architectures: tuple[str, ...]  # class-name suffixes of its transformers heads
    peft_task_type: str | None  # peft's TaskType: which head LoRA trains in full and saves
    predicts: str  # what `predict` writes for each row
    labelled: bool  # learns label names from its training data (written to label_names.json)
    groups_by_length: bool  # `data.group_by_length` by default
    lora_head: tuple[str, ...] = ()  # without a peft task type: the head modules LoRA trains
    packs: bool = False  # `task.packing` applies
    # A micro-batch is sized in tokens (`train.micro_batch_tokens` applies); False: in rows
    # (images, recordings), `train.micro_batch_size` alone.
    counts_tokens: bool = True
    generates_text: bool = False  # `train.generation_prompts` applies (it generates text)
    # The memory plan measures the model (a dry run of `Task.example_batch` on the fake
    # device, `launcher.worker.probe`) instead of counting it from its config.json.
    probed: bool = False

    @property
    def default_format(self) -> str:
        return self.formats[0]
