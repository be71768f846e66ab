"""Tokenize once: the main process encodes the data, the others (and later launches) reuse it.

Entries (`launcher.data.cache_entry` names them) are `datasets` folders (`save_to_disk`; read back
memory-mapped, through pyarrow), written under a temporary name and renamed, so a crash never
leaves a half-written entry behind. A Slurm run's entry is written before its training job
starts, by a job of its own (`launcher.worker.prepare`).
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from launcher.contract.events import EventLog, Preprocessing
from launcher.contract.heartbeat import Phase
from launcher.contract.plan import Plan
from launcher.contract.records import JsonRecord
from launcher.contract.reports import DataStats
from launcher.contract.vocabulary import ExitCode
from launcher.data.cache_entry import COMPLETE_MARK, cache_entry, is_complete
from launcher.recipe.schema import Recipe
from launcher.tasks.base import EncodedData, Task
from launcher.worker.arrow_rows import ArrowRows
from launcher.worker.stopping import REQUEST
from launcher.worker.watchdog import Watchdog

PREPROCESS_WAIT = timedelta(hours=24)  # others wait for rank 0's tokenization this long at most


@dataclass(frozen=True)
class CacheMeta(JsonRecord):
    """`meta.json` of a cache entry: what the tokenized rows came with."""

    label_names: list[str] | None
    stats: DataStats


def encode_cached(task: Task, tokenizer: Any, recipe: Recipe, plan: Plan,
                   accelerator: Accelerator, events: EventLog, watchdog: Watchdog) -> EncodedData:
    """The task's encoded data, from the cache when an entry for these inputs exists.

    Rank 0 tokenizes while the others wait in a barrier of their own, with a long timeout
    (the hang watchdog, not a collective timeout, catches a rank 0 that stopped progressing);
    a rank that cannot see rank 0's entry (a cache not shared across nodes) tokenizes itself.
    """
    watchdog.progress(Phase.PREPROCESS)
    # Hashing the data files is I/O over all of them: rank 0 does it and tells the others.
    entry = broadcast_object_list([cache_entry(recipe, plan) if accelerator.is_main_process
                                   else None])[0]
    # The group is made before rank 0 encodes: making it is a collective that would block the
    # others in C++, deaf to the launcher's TERM should rank 0 fail.
    group = (torch.distributed.new_group(backend="gloo", timeout=PREPROCESS_WAIT)
             if plan.world_size > 1 else None)
    encoded = None
    tick = functools.partial(watchdog.progress, Phase.PREPROCESS)
    if accelerator.is_main_process:
        encoded = encode_or_load(task, tokenizer, entry, events, tick, save=True)
    if group is not None:
        _wait_for_all(torch.distributed.barrier(group=group, async_op=True))
        torch.distributed.destroy_process_group(group)
    if encoded is None:
        encoded = encode_or_load(task, tokenizer, entry, events, tick, save=False)
    return encoded


def _wait_for_all(barrier: Any, poll_s: float = 0.2) -> None:
    """Wait for the other ranks, leaving on a stop request: the launcher TERMs the ranks still
    waiting when rank 0 ended (bad data), and a blocking barrier would hold this one until its
    SIGKILL 30 s later (a signal's Python handler runs only between calls)."""
    while not barrier.is_completed():
        if REQUEST.requested:
            raise SystemExit(ExitCode.STOPPED)
        time.sleep(poll_s)
    barrier.wait()


def encode_or_load(task: Task, tokenizer: Any, entry: Path, events: EventLog,
                   tick: Callable[[], None], *, save: bool) -> EncodedData:
    """The cache entry's examples, else the task's encoding (saved as the entry if `save`);
    said in the event log and the output. `tick()` is called as encoding progresses."""
    if is_complete(entry):
        _say(events, f"preprocessing: cache hit, read the examples of {entry}")
        return _load(entry)
    _say(events, "preprocessing: encoding the data (cached for later launches)")
    task.report_progress = _throttled(events, tick)
    encoded = task.encode_data(tokenizer)
    if save:
        save_entry(encoded, entry)
        _say(events, f"preprocessing: {len(encoded.train)} train / {len(encoded.eval)} "
             f"eval examples cached in {entry}")
    return encoded


def _say(events: EventLog, text: str) -> None:
    events.message(text)
    if events.enabled:
        print(f"sft-launch: {text}", flush=True)


def _throttled(events: EventLog, tick: Callable[[], None],
               every_s: float = 1.0) -> Callable[[str, int, int], None]:
    """A progress reporter writing a `preprocess` event at most once a second (and at the end)."""
    last = [0.0]

    def report(what: str, done: int, total: int) -> None:
        tick()
        now = time.monotonic()
        if done == total or now - last[0] >= every_s:
            last[0] = now
            events.write(Preprocessing(what=what, done=done, total=total))

    return report


def save_entry(encoded: EncodedData, entry: Path) -> None:
    """Write `encoded` as the cache entry `entry`, atomically (a temporary folder renamed)."""
    tmp = entry.with_name(f".{entry.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, rows in (("train", encoded.train), ("eval", encoded.eval)):
        if rows:
            from datasets import Dataset  # only to write an entry: reading needs pyarrow alone

            Dataset.from_list(list(rows)).save_to_disk(str(tmp / name))
    CacheMeta(label_names=encoded.label_names, stats=encoded.stats).write(tmp / COMPLETE_MARK)
    try:
        tmp.rename(entry)
    except OSError:  # another launch wrote the same entry first: theirs is as good
        shutil.rmtree(tmp, ignore_errors=True)


def _load(entry: Path) -> EncodedData:
    meta = CacheMeta.read(entry / COMPLETE_MARK)

    def rows(name: str) -> Any:
        return ArrowRows(entry / name) if (entry / name).is_dir() else []

    return EncodedData(train=rows("train"), eval=rows("eval"), label_names=meta.label_names,
                    stats=meta.stats)
