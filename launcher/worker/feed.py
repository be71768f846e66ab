"""The examples of each optimizer step, in order and collated ahead of the loop.

Which examples step `s` trains on is a pure function of the seed and `s` (`StepOrder`: the
epoch's permutation, sliced by the global batch, then by rank), so a resumed run continues on the
same curve and a run with another world size sees the same examples in the same steps. Tasks that
decode their inputs (images, audio: `Task.decodes`) collate in DataLoader worker processes, a
few steps ahead, so no file is read or decoded in the training loop; the others collate in the
loop's process, step by step. Augmentation, where a task has it, is seeded by (seed, epoch,
example), so it is a pure function of the step as well.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from launcher.contract.plan import Plan
from launcher.data.encode.images import augmentation_seed
from launcher.data.encode.packing import length_grouped_batches, micro_batches
from launcher.tasks.base import Batch, Example, Task


@dataclass
class MicroBatch:
    """One forward pass: the collated tensors, its real tokens, and the tokens it computes."""

    batch: Batch
    tokens: int
    computed: int


@dataclass
class StepInput:
    """This rank's share of one optimizer step: its example ids, micro-batches and loss units."""

    step: int
    ids: list[int]
    micro: list[MicroBatch]
    units: int

    @property
    def samples(self) -> int:
        return len(self.ids)

    @property
    def tokens(self) -> int:
        return sum(m.tokens for m in self.micro)


class StepOrder:
    """The training examples of each step on one rank."""

    def __init__(self, task: Task, examples: Sequence[Example], plan: Plan, seed: int,
                 group_by_length: bool, rank: int) -> None:
        self.task, self.examples, self.plan = task, examples, plan
        self.seed, self.group_by_length, self.rank = seed, group_by_length, rank
        self.steps_per_epoch = len(examples) // plan.batch.global_size
        self.cached: tuple[int, list[int]] = (-1, [])

    def epoch_order(self, epoch: int) -> list[int]:
        """The order of the training examples in `epoch`: shuffled (or length-grouped) by seed."""
        if self.cached[0] != epoch:
            seed = self.seed + epoch
            if self.group_by_length:
                lengths = [self.task.tokens_in(e) for e in self.examples]
                # Grouped by global batch, not micro-batch: the order is the same at any world
                # size, and each rank's slice of a global batch is of similar lengths too.
                batches = length_grouped_batches(lengths, self.plan.batch.global_size, seed)
                order = [i for batch in batches for i in batch]
            else:
                generator = torch.Generator().manual_seed(seed)
                order = torch.randperm(len(self.examples), generator=generator).tolist()
            self.cached = (epoch, order)
        return self.cached[1]

    def ids(self, step: int) -> list[int]:
        """This rank's example ids for optimizer step `step` (0-based). The global batch is the
        same set at any world size; each rank takes its slice."""
        epoch, position = divmod(step, self.steps_per_epoch)
        size = self.plan.batch.global_size
        chunk = size // self.plan.world_size
        start = position * size + self.rank * chunk
        return self.epoch_order(epoch)[start:start + chunk]


class StepInputs(Dataset):
    """Step `s` -> its `StepInput`: the examples cut into micro-batches and collated."""

    def __init__(self, order: StepOrder) -> None:
        self.order = order

    def __len__(self) -> int:
        return 1 << 62  # any step: epochs repeat the data

    def __getitem__(self, step: int) -> StepInput:
        order, task, plan = self.order, self.order.task, self.order.plan
        ids = order.ids(step)
        examples = [order.examples[i] for i in ids]
        if task.augments:  # seeded per (epoch, example): the same pixels after a resume
            epoch = step // order.steps_per_epoch
            examples = [{**e, "augment_seed": augmentation_seed(order.seed, epoch, i)}
                        for e, i in zip(examples, ids, strict=True)]
        chunks = micro_batches(examples, plan.batch.micro, plan.batch.micro_tokens,
                               task.computed_tokens)
        micro = []
        for chunk in chunks:
            batch = task.collate(chunk)
            micro.append(MicroBatch(batch, sum(task.tokens_in(e) for e in chunk),
                                    task.computed_in(batch)))
        return StepInput(step, ids, micro, sum(task.count_units(e) for e in examples))


def step_inputs(order: StepOrder, start: int, stop: int, workers: int) -> Iterator[StepInput]:
    """Steps `start` .. `stop - 1` in order; with `workers`, collated that many processes ahead."""
    if not workers:
        inputs = StepInputs(order)
        return (inputs[step] for step in range(start, stop))
    # Its own generator: a DataLoader draws its workers' base seed from the global RNG when it
    # starts, and a resumed run starts it after restoring that RNG, so every dropout mask after
    # a resume would differ from the uninterrupted run's (the workers draw nothing: augmentation
    # is seeded by the step).
    loader = DataLoader(StepInputs(order), batch_size=None, sampler=range(start, stop),
                        num_workers=workers, collate_fn=_as_is, prefetch_factor=2,
                        multiprocessing_context="fork", generator=torch.Generator())
    return iter(loader)


def _as_is(item: Any) -> Any:
    return item
