"""Causal-LM SFT: chat/instruction rows rendered with a chat template, loss on responses."""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.modeling_utils import slice_logits_to_keep

from launcher.data.encode.chat import (
    IGNORE_INDEX,
    ChatTemplateError,
    EncodeStats,
    encode_rows,
    render,
    resolve_template,
)
from launcher.data.encode.packing import pack_indices, packed_collator
from launcher.data.encode.preview import Preview, loss_segments
from launcher.data.splits import load_splits
from launcher.recipe.schema import Recipe
from launcher.tasks.base import Batch, EncodedData, EvalOutput, Example, Row, Task
from launcher.tasks.packed_attention import keep_documents_apart
from launcher.tasks.pretrained import pretrained


class CausalLM(Task):
    """Next-token prediction on the loss-bearing tokens; metrics: eval loss and perplexity."""

    keeps_logits = False  # the model takes `logits_to_keep` (set by `load_model`)

    def load_tokenizer(self) -> Any:
        tokenizer = AutoTokenizer.from_pretrained(
            self.plan.tokenizer_path, trust_remote_code=self.recipe.model.trust_remote_code
        )
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    @classmethod
    def preview(cls, row: Row, tokenizer: Any, recipe: Recipe, names: list[str]) -> Preview:
        """The row through the training encode path (template, tools, `train_on`,
        truncation): the marked text is exactly what carries loss."""
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

    def encode_data(self, tokenizer: Any) -> EncodedData:
        self.tokenizer = tokenizer
        splits = load_splits(self.recipe)
        data = self.recipe.data
        train, train_stats = self.encode_counted(splits.train, "train")
        evaluation, eval_stats = self.encode_counted(splits.eval, "eval")
        stats = dataclasses.replace(
            splits.stats, truncated=train_stats.truncated + eval_stats.truncated,
            dropped_too_long=train_stats.dropped + eval_stats.dropped)
        if self.recipe.task.packing:
            train = pack(train, data.max_length)
            stats = dataclasses.replace(stats, packs=len(train))
        return EncodedData(train=train, eval=evaluation, stats=stats)

    def encode(self, rows: list[Row]) -> list[Example]:
        return self.encode_counted(rows)[0]

    def encode_counted(self, rows: list[Row],
                       what: str = "rows") -> tuple[list[Example], EncodeStats]:
        """The rendered rows' tokens fitted to `data.max_length`, labels on `task.train_on`
        (rows that cannot keep a loss-bearing token dropped), and what fitting did."""
        data, task = self.recipe.data, self.recipe.task
        return encode_rows(rows, self.tokenizer, data.max_length, data.truncation, task.train_on,
                           task.chat_template,
                           lambda done: self.report_progress(what, done, len(rows)))

    def prompts(self, rows: list[Row]) -> list[Example]:
        """Each row's prompt: the conversation before its answer (the last turn, when it is
        the assistant's), rendered (with its tools) by the run's chat template with the
        generation prompt; a text row's text. Cut to its last `data.max_length` tokens."""
        chats = any("messages" in row for row in rows)
        template = resolve_template(self.tokenizer, self.recipe.task.chat_template) if chats else ""
        prompts = []
        for row in rows:
            if "messages" in row:
                text = render(self.tokenizer, _before_answer(row["messages"]), template,
                              add_generation_prompt=True, tools=row.get("tools"))
                ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            else:
                ids = self.tokenizer(row["text"])["input_ids"]
            prompts.append({"input_ids": list(ids[-self.recipe.data.max_length:])})
        return prompts

    def generation_prompts(self, eval_examples: Sequence[Example]
                           ) -> list[tuple[Example, str | None]]:
        """`train.generation_prompts`: the recipe's prompts (user turns; texts for the text format),
        or the first N eval examples cut before their last answer, as training rendered them,
        with that answer as the reference."""
        wanted = self.recipe.train.generation_prompts
        if isinstance(wanted, list):
            text = self.recipe.data.format == "text"
            rows = [{"text": p} if text else {"messages": [{"role": "user", "content": p}]}
                    for p in wanted]
            return [(prompt, None) for prompt in self.prompts(rows)]
        # (a cached `datasets.Dataset` sliced gives columns: index it row by row)
        return [_split_answer(eval_examples[i], self.tokenizer)
                for i in range(min(wanted, len(eval_examples)))]

    def reference(self, row: Row) -> str | None:
        """The answer: a conversation's last turn when it is the assistant's."""
        last = row.get("messages", [{}])[-1]
        return last.get("content") if last.get("role") == "assistant" else None

    def predict(self, model: torch.nn.Module, batch: Batch, max_new_tokens: int,
                synced: bool = False) -> list[str]:
        """The text each prompt continues with, greedily, up to the end of the turn."""
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             use_cache=True, pad_token_id=self.tokenizer.pad_token_id,
                             synced_gpus=synced)
        return self.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:],
                                           skip_special_tokens=True)

    def load_model(self, encoded: EncodedData, meta: bool = False) -> torch.nn.Module:
        model = pretrained(AutoModelForCausalLM, self.recipe, self.plan, meta)
        model.config.use_cache = False  # training: no KV cache (and packing needs none)
        self.keeps_logits = keeps_logits_by_mask(model)
        if self.recipe.task.packing:
            keep_documents_apart(model)
        if self.recipe.train.activation_checkpointing:
            model.gradient_checkpointing_enable()
        return model

    def collate(self, examples: list[dict[str, Any]]) -> Batch:
        """Packs: one padding-free row, no attention mask; examples: padded to the longest.
        Either way `logits_to_keep`: the positions whose next token bears a loss (the LM head
        runs on those only), when the model takes it."""
        if "labels" not in examples[0]:  # prompts: padded on the left, where generation goes on
            return pad_prompts(examples, self.tokenizer.pad_token_id)
        if "position_ids" in examples[0]:
            batch = {key: torch.tensor([[v for e in examples for v in e[key]]])
                     for key in ("input_ids", "labels", "position_ids")}
        else:
            batch = pad_examples(examples, self.tokenizer.pad_token_id)
        if self.keeps_logits:
            batch["logits_to_keep"] = loss_positions(batch["labels"])
        return batch

    def computed_tokens(self, examples: Sequence[dict[str, Any]]) -> int:
        """Packs are one padding-free row: their tokens, no padding."""
        if "position_ids" in examples[0]:
            return sum(len(e["input_ids"]) for e in examples)
        return super().computed_tokens(examples)

    def count_units(self, example: dict[str, Any]) -> int:
        """Tokens that are predicted (a label at position >= 1, after the shift)."""
        return sum(1 for label in example["labels"][1:] if label != IGNORE_INDEX)

    def loss_sum(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return token_loss_sum(model(**inputs).logits, batch["labels"])

    def evaluate(self, model: torch.nn.Module, batch: Batch) -> EvalOutput:
        loss, count = self.loss_sum(model, batch)
        return EvalOutput(loss_sum=float(loss), count=count)

    def metrics(self, loss_sum: float, count: int, predictions: list[Any],
                references: list[Any], sums: dict[str, float] | None = None) -> dict[str, float]:
        loss = loss_sum / max(count, 1)
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}


def pad_examples(examples: list[dict[str, Any]], pad_id: int) -> Batch:
    """A batch padded to its longest example: labels padded with -100, an attention mask."""
    longest = max(len(e["input_ids"]) for e in examples)
    ids, labels, mask = [], [], []
    for e in examples:
        gap = longest - len(e["input_ids"])
        ids.append(e["input_ids"] + [pad_id] * gap)
        labels.append(e["labels"] + [IGNORE_INDEX] * gap)
        mask.append([1] * len(e["input_ids"]) + [0] * gap)
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask)}


def pad_prompts(examples: list[dict[str, Any]], pad_id: int) -> Batch:
    """Prompts padded on the left to the longest, with an attention mask (for `generate`)."""
    longest = max(len(e["input_ids"]) for e in examples)
    gaps = [longest - len(e["input_ids"]) for e in examples]
    return {"input_ids": torch.tensor([[pad_id] * gap + e["input_ids"]
                                       for gap, e in zip(gaps, examples, strict=True)]),
            "attention_mask": torch.tensor([[0] * gap + [1] * (longest - gap) for gap in gaps])}


def _split_answer(example: Example, tokenizer: Any) -> tuple[Example, str | None]:
    """An encoded example as a prompt (the tokens before its last loss-bearing span) and that
    span's text; a text example (loss everywhere) is cut in half instead."""
    ids, labels = example["input_ids"], example["labels"]
    labelled = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    start = labelled[-1] if labelled else 0
    while start > 0 and labels[start - 1] != IGNORE_INDEX:
        start -= 1
    if start <= 1:
        start = max(1, len(ids) // 2)
    answer = [t for t, label in zip(ids[start:], labels[start:], strict=True)
              if label != IGNORE_INDEX]
    return {"input_ids": list(ids[:start])}, tokenizer.decode(answer, skip_special_tokens=True)


def _before_answer(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A conversation without its last turn when that is the assistant's (the answer)."""
    return messages[:-1] if messages[-1]["role"] == "assistant" else messages


def pack(examples: list[dict[str, Any]], max_tokens: int) -> list[dict[str, Any]]:
    """Examples packed (best fit) into rows of at most `max_tokens`: position ids restart at
    every example and its first label is -100, so nothing is learned across a boundary."""
    collate = packed_collator()
    packs = pack_indices([len(e["input_ids"]) for e in examples], max_tokens)
    rows = []
    for indices in packs:
        row = collate([examples[i] for i in indices])
        rows.append({k: row[k][0].tolist() for k in ("input_ids", "labels", "position_ids")})
    return rows


def keeps_logits_by_mask(model: torch.nn.Module) -> bool:
    """Whether `model`'s forward slices its hidden states by a boolean `logits_to_keep` (the
    transformers models that call `slice_logits_to_keep`; remote code may slice otherwise)."""
    module = sys.modules.get(type(model).__module__)
    return getattr(module, "slice_logits_to_keep", None) is slice_logits_to_keep


def loss_positions(labels: torch.Tensor) -> torch.Tensor:
    """``[batch, tokens]`` booleans: True where the next token's label bears a loss."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over labelled positions, and how many there are.
    `logits`: ``[batch, tokens, vocab]``, or ``[kept, vocab]`` for the `loss_positions` alone
    (the model's `logits_to_keep`): the same sum, without the logits no loss reads."""
    if logits.dim() == 2:
        targets = labels[:, 1:][loss_positions(labels)[:, :-1]]
    else:
        logits, targets = logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1)
    loss = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, int((targets != IGNORE_INDEX).sum())
