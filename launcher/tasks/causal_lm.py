"""Causal-LM SFT: chat/instruction rows rendered with a chat template, loss on responses."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from launcher.data.chat import IGNORE_INDEX, encode_rows
from launcher.data.packing import pack_indices, packed_collator, prepare_for_packing
from launcher.data.splits import load_splits
from launcher.tasks.base import Batch, EvalOutput, Prepared, Task, model_dtype


class CausalLM(Task):
    """Next-token prediction on the loss-bearing tokens; metrics: eval loss and perplexity."""

    def load_tokenizer(self) -> Any:
        tokenizer = AutoTokenizer.from_pretrained(
            self.plan.tokenizer_path, trust_remote_code=self.recipe.model.trust_remote_code
        )
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    def prepare(self, tokenizer: Any) -> Prepared:
        self.tokenizer = tokenizer
        splits = load_splits(self.recipe)
        data, task = self.recipe.data, self.recipe.task

        def encode(rows: list[dict[str, Any]], what: str) -> tuple[list[dict[str, Any]], Any]:
            return encode_rows(rows, tokenizer, data.max_length, data.truncation, task.train_on,
                               task.chat_template,
                               lambda done: self.report_progress(what, done, len(rows)))

        train, train_stats = encode(splits.train, "train")
        evaluation, eval_stats = encode(splits.eval, "eval")
        stats = dataclasses.replace(
            splits.stats, truncated=train_stats.truncated + eval_stats.truncated,
            dropped_too_long=train_stats.dropped + eval_stats.dropped)
        if task.packing:
            train = pack(train, data.max_length)
            stats = dataclasses.replace(stats, packs=len(train))
        return Prepared(train=train, eval=evaluation, stats=stats)

    def load_model(self, prepared: Prepared) -> torch.nn.Module:
        model = AutoModelForCausalLM.from_pretrained(
            self.plan.model_path,
            dtype=model_dtype(self.recipe, self.plan),
            trust_remote_code=self.recipe.model.trust_remote_code,
            attn_implementation=self.recipe.model.attn_implementation,
        )
        model.config.use_cache = False  # training: no KV cache (and packing needs none)
        if self.recipe.task.packing:
            prepare_for_packing(model)
        if self.recipe.train.activation_checkpointing:
            model.gradient_checkpointing_enable()
        return model

    def collate(self, examples: list[dict[str, Any]]) -> Batch:
        if "position_ids" in examples[0]:  # packs: one padding-free row, no attention mask
            return {key: torch.tensor([[v for e in examples for v in e[key]]])
                    for key in ("input_ids", "labels", "position_ids")}
        return pad_examples(examples, self.tokenizer.pad_token_id)

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
                references: list[Any]) -> dict[str, float]:
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


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over labelled positions, and how many there are."""
    shifted_logits = logits[:, :-1].float().reshape(-1, logits.size(-1))
    shifted_labels = labels[:, 1:].reshape(-1)
    loss = F.cross_entropy(shifted_logits, shifted_labels, ignore_index=IGNORE_INDEX,
                           reduction="sum")
    return loss, int((shifted_labels != IGNORE_INDEX).sum())
