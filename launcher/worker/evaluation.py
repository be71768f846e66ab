"""Evaluation over every rank: each its share of the eval rows, the sums and predictions
combined (the rows, by eval index, on rank 0); and the few rows the trackers show predicted
again, for a task whose evaluation keeps no prediction per row."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from launcher.contract.plan import Plan
from launcher.tasks.base import Example, Task, batches, evaluate_examples
from launcher.worker.metrics import Metrics

EvalRow = tuple[int, Any, Any]  # an eval example's index, prediction and reference


@torch.no_grad()
def evaluate_on_ranks(task: Task, model: torch.nn.Module, rows: Sequence[Any],
                      acc: Accelerator, plan: Plan,
                      progress: Callable[[], None]) -> tuple[Metrics, list[EvalRow]]:
    """The task's metrics over all `rows`, and every row's prediction (on rank 0, sorted; where
    the task predicts). With sharded parameters (or a loss that reduces over ranks: the task's
    `collective_forward`) every forward is collective, so a rank with fewer rows runs as many
    forwards as the busiest. A DDP model is evaluated through its module (`unwrapped`)."""
    model = unwrapped(model)
    indices = list(range(acc.process_index, len(rows), plan.world_size))
    micro = plan.batch.micro
    out = evaluate_examples(task, model, [rows[j] for j in indices], micro, acc.device,
                            acc.autocast, progress)
    if collective(task, plan):
        most = math.ceil(math.ceil(len(rows) / plan.world_size) / micro)
        for _ in range(most - math.ceil(len(indices) / micro)):
            evaluate_examples(task, model, [rows[0]], micro, acc.device, acc.autocast, progress)
    totals = acc.reduce(torch.tensor(
        [out.loss_sum, float(out.count), *(out.sums.get(key, 0.0) for key in task.summed)],
        dtype=torch.float64, device=acc.device), "sum")  # pixel counts beyond 2**24: exact
    predicted: list[EvalRow] = (list(zip(indices, out.predictions, out.references,
                                         strict=False)) if out.predictions else [])
    if plan.world_size > 1:
        predicted = gather_object(predicted)
    predicted.sort()
    sums = dict(zip(task.summed, totals[2:].tolist(), strict=True))
    return task.metrics(float(totals[0]), int(totals[1]), [r[1] for r in predicted],
                        [r[2] for r in predicted], sums), predicted


@torch.no_grad()
def predicted_rows(task: Task, model: torch.nn.Module, examples: Sequence[Example],
                   acc: Accelerator, plan: Plan) -> list[EvalRow]:
    """`task.predict` on `examples` (the first eval rows), as rank 0's rows (index, prediction,
    no reference). Rank 0 alone runs the forwards, unless a forward is collective (sharded
    parameters: FSDP, ZeRO-3): then every rank runs the same ones; the other ranks get []."""
    if not (acc.is_main_process or collective(task, plan)):
        return []
    model, predicted = unwrapped(model), []
    for batch in batches(task, examples, plan.batch.micro, acc.device):
        with acc.autocast():
            predicted.extend(task.predict(model, batch, 0))
    return [(index, found, None) for index, found in enumerate(predicted)] \
        if acc.is_main_process else []


def collective(task: Task, plan: Plan) -> bool:
    """A forward involves every rank: the parameters are sharded, or the task's loss reduces
    over the ranks (its `collective_forward`)."""
    strategy = plan.active_strategy
    return task.collective_forward or (strategy is not None and strategy.shards_parameters)


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """A DDP model's module: DDP's forward broadcasts the buffers (batch norm statistics), a
    collective that the ranks not evaluating the same batches would never join."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model.module
    return model
