"""Batching tokenized causal-LM examples: padding-free packing and length grouping.

Packing puts whole examples into packs of at most ``max_tokens`` tokens (`pack_indices`); the
packed collator (transformers' `DataCollatorWithFlattening`) turns one pack into a single row of
shape ``[1, tokens]`` with ``input_ids``, ``labels`` and ``position_ids`` that restart at 0 for
every example, the first label of each example set to -100 (no prediction across a boundary),
and no ``attention_mask``.

How transformers (5.24, checked on CPU) keeps packed examples apart: the mask builder
(``masking_utils.create_causal_mask``) reads the position-id restarts and builds a block-diagonal
causal mask for sdpa, eager and flex attention; flash attention turns the restarts into varlen
``cu_seqlens`` (only for a batch of one row, hence ``[1, tokens]``). The mask builder does so
only when there is no ``attention_mask`` and no KV cache, and a model whose config says
``use_cache=True`` (Llama's default) makes a cache in every forward, training included: then
every token attends to the examples before it in the pack, silently (logits off by ~0.5 on a tiny
Llama). `prepare_for_packing` turns the cache off; with it a pack's loss equals the token-weighted
mean of its examples' losses run one by one.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch
from transformers import DataCollatorWithFlattening, PreTrainedModel
from transformers.trainer_pt_utils import get_length_grouped_indices

from launcher.data.chat import IGNORE_INDEX

PACKED_ATTENTION = ("sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3")


def pack_indices(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Group example indices into packs of at most `max_tokens` tokens, best-fit decreasing:
    longest examples first, each into the pack with the least room that still holds it. Packs
    come near-full, longest-first, example order not kept (the loop shuffles them per epoch).
    An example longer than `max_tokens` is an error (fit examples to length first).
    """
    too_long = [i for i, length in enumerate(lengths) if length > max_tokens]
    if too_long:
        raise ValueError(
            f"{len(too_long)} examples are longer than the pack size {max_tokens} "
            f"(first: #{too_long[0]}, {lengths[too_long[0]]} tokens)"
        )
    packs: list[list[int]] = []
    rooms: list[tuple[int, int]] = []  # (room left, pack number), sorted
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        position = bisect.bisect_left(rooms, (lengths[index], -1))
        if position == len(rooms):
            packs.append([])
            room, number = max_tokens, len(packs) - 1
        else:
            room, number = rooms.pop(position)
        packs[number].append(index)
        bisect.insort(rooms, (room - lengths[index], number))
    return packs


def packed_collator() -> DataCollatorWithFlattening:
    """Collate one pack of examples into a ``[1, tokens]`` padding-free batch (see module doc)."""
    return DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX)


def prepare_for_packing(model: PreTrainedModel) -> None:
    """Make `model` keep packed examples apart: no KV cache; an attention that honours packing."""
    implementation = model.config._attn_implementation
    if implementation not in PACKED_ATTENTION:
        raise ValueError(
            f"attention {implementation!r} is not known to honour packed position ids; "
            f"use one of {PACKED_ATTENTION} or turn packing off"
        )
    model.config.use_cache = False


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int) -> list[list[int]]:
    """Batches of indices of similar lengths (transformers' length grouping: random mega-batches
    sorted by length; the longest batch first), deterministic by `seed`."""
    generator = torch.Generator().manual_seed(seed)
    order = get_length_grouped_indices(list(lengths), batch_size, generator=generator)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
