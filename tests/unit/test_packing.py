"""Packing and batching: packs keep examples apart, so a packed batch's loss is the token-weighted
mean of its examples' losses run one by one (tiny random Llama, fp32, eval mode)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import torch

from launcher.data.encode.chat import IGNORE_INDEX, encode_rows
from launcher.data.encode.packing import (
    length_grouped_batches,
    micro_batches,
    pack_indices,
    packed_collator,
)
from launcher.data.formats import load_rows
from launcher.tasks.causal_lm import pad_examples
from launcher.tasks.packed_attention import keep_documents_apart

MAX_LENGTH = 96
PACK_TOKENS = 256


@pytest.fixture(scope="module")
def examples(tiny_tokenizer: Any, fixture_data: Path) -> list[dict[str, list[int]]]:
    alpaca = load_rows([fixture_data / "alpaca.json"], "alpaca").rows
    messages = load_rows([fixture_data / "messages.jsonl"], "messages").rows
    text = load_rows([fixture_data / "wikisql.jsonl"], "text").rows[:6]
    encoded, _ = encode_rows(alpaca + messages + text, tiny_tokenizer, max_length=MAX_LENGTH)
    return encoded


@pytest.fixture(scope="module")
def model(tiny_llama_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32)
    assert model.config._attn_implementation == "sdpa"
    keep_documents_apart(model)
    return model.eval()


def loss_and_count(model: Any, example: dict[str, list[int]]) -> tuple[float, int]:
    """One example alone: its mean loss and the number of tokens it is taken over."""
    input_ids = torch.tensor([example["input_ids"]])
    labels = torch.tensor([example["labels"]])
    with torch.no_grad():
        loss = model(input_ids=input_ids, labels=labels).loss.item()
    return loss, sum(label != IGNORE_INDEX for label in example["labels"][1:])


def fullness(lengths: list[int], packs: list[list[int]], max_tokens: int) -> float:
    """Real tokens / the packs' token budget."""
    return sum(lengths[i] for pack in packs for i in pack) / (len(packs) * max_tokens)


def padded_share(lengths: list[int], batches: list[list[int]]) -> float:
    """Real tokens / tokens computed when each batch is padded to its longest example."""
    computed = sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)
    return sum(lengths[i] for batch in batches for i in batch) / computed


def weighted_mean(model: Any, group: list[dict[str, list[int]]]) -> float:
    pairs = [loss_and_count(model, example) for example in group]
    return sum(loss * count for loss, count in pairs) / sum(count for _, count in pairs)


def test_packs_hold_every_example_once_within_budget() -> None:
    lengths = [5, 9, 3, 10, 1, 7, 7, 2]
    packs = pack_indices(lengths, 10)
    assert sorted(i for pack in packs for i in pack) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in pack) <= 10 for pack in packs)
    assert len(packs) == 5  # 44 tokens: the fewest packs of 10 that can hold them
    with pytest.raises(ValueError, match="longer than the pack size 9"):
        pack_indices(lengths, 9)


def test_packed_batch_layout(examples: list[dict[str, list[int]]]) -> None:
    group = examples[:3]
    batch = packed_collator()(group)
    assert set(batch) == {"input_ids", "labels", "position_ids"}
    lengths = [len(example["input_ids"]) for example in group]
    assert batch["input_ids"].shape == (1, sum(lengths))
    starts = [0, lengths[0], lengths[0] + lengths[1]]
    positions = batch["position_ids"][0].tolist()
    assert [positions[s] for s in starts] == [0, 0, 0]
    assert all(batch["labels"][0, s].item() == IGNORE_INDEX for s in starts)
    assert batch["input_ids"][0].tolist() == [t for example in group for t in example["input_ids"]]


def test_packed_loss_equals_token_weighted_mean_of_examples(
    model: Any, examples: list[dict[str, list[int]]]
) -> None:
    lengths = [len(example["input_ids"]) for example in examples]
    packs = pack_indices(lengths, PACK_TOKENS)
    assert fullness(lengths, packs, PACK_TOKENS) > 0.9
    collate = packed_collator()
    for pack in packs[:4]:
        group = [examples[i] for i in pack]
        assert len(group) > 1
        with torch.no_grad():
            packed = model(**collate(group)).loss.item()
        assert packed == pytest.approx(weighted_mean(model, group), abs=1e-5)


def test_padded_loss_equals_token_weighted_mean_of_examples(
    model: Any, tiny_tokenizer: Any, examples: list[dict[str, list[int]]]
) -> None:
    """The padded batches training uses (`CausalLM.collate` without packing)."""
    group = examples[:4]
    batch = pad_examples(group, tiny_tokenizer.pad_token_id)
    longest = max(len(example["input_ids"]) for example in group)
    assert batch["input_ids"].shape == (4, longest)
    assert batch["attention_mask"].sum().item() == sum(len(e["input_ids"]) for e in group)
    with torch.no_grad():
        padded = model(**batch).loss.item()
    assert padded == pytest.approx(weighted_mean(model, group), abs=1e-5)


def test_length_grouping_is_seeded_and_pads_less(examples: list[dict[str, list[int]]]) -> None:
    lengths = [len(example["input_ids"]) for example in examples]
    batches = length_grouped_batches(lengths, 4, seed=0)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert length_grouped_batches(lengths, 4, seed=0) == batches
    in_order = [list(range(i, min(i + 4, len(lengths)))) for i in range(0, len(lengths), 4)]
    assert padded_share(lengths, batches) > padded_share(lengths, in_order)


def test_length_grouped_batches_come_in_random_order_the_longest_first() -> None:
    """Not transformers' sawtooth (every mega-batch from long to short): the batches shuffled."""
    lengths = [(7 * i) % 101 + 1 for i in range(2000)]
    batches = length_grouped_batches(lengths, 10, seed=1)
    longest = [max(lengths[i] for i in batch) for batch in batches]
    assert longest[0] == max(lengths)
    falls = sum(b <= a for a, b in itertools.pairwise(longest[1:]))
    assert 0.3 < falls / (len(longest) - 2) < 0.7  # sorted runs would fall at every step


def test_micro_batches_keep_order_rows_and_token_budget() -> None:
    """Consecutive cuts under both limits; an example over the budget runs alone; no budget:
    micro rows at a time, as before."""
    lengths = [300, 500, 200, 900, 1200, 100, 100, 100, 400]

    def padded(chunk: list[int]) -> int:
        return len(chunk) * max(chunk)

    cut = micro_batches(lengths, 4, 1000, padded)
    assert [x for chunk in cut for x in chunk] == lengths
    assert cut == [[300, 500], [200], [900], [1200], [100, 100, 100], [400]]
    assert all(padded(c) <= 1000 or len(c) == 1 for c in cut)
    assert micro_batches(lengths, 4, None, padded) == [lengths[:4], lengths[4:8], lengths[8:]]
    assert micro_batches(lengths, 2, 10**6, sum) == [lengths[i:i + 2] for i in range(0, 9, 2)]
    assert micro_batches(lengths, 9, 1000, sum) == [[300, 500, 200], [900], [1200],
                                                     [100, 100, 100, 400]]
