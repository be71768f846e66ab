"""Tokenize once: the main process encodes the data, the others (and later launches) reuse it.

The cache key covers everything the examples depend on: the data files' bytes (a Hub dataset's
`datasets` fingerprint), the tokenizer's files, the recipe's data and task settings, and the
preprocessing code itself. Entries are `datasets` folders (`save_to_disk`; read back memory-mapped,
through pyarrow), written under a temporary name and renamed, so a crash never leaves a
half-written entry behind.
"""

from __future__ import annotations

import hashlib
import json
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

from launcher.contract.cache import cache_base
from launcher.contract.events import EventLog, Preprocessing
from launcher.contract.heartbeat import Phase
from launcher.contract.plan import Plan
from launcher.contract.records import JsonRecord
from launcher.contract.reports import DataStats
from launcher.data.hub_data import HubData, is_hub_data
from launcher.recipe.schema import Recipe
from launcher.tasks.base import EncodedData, Task
from launcher.worker.arrow_rows import ArrowRows
from launcher.worker.watchdog import Watchdog

CODE = Path(__file__).resolve().parents[1]
CODE_FILES = sorted([*(CODE / "data").rglob("*.py"), *(CODE / "tasks").glob("*.py"),
                     CODE / "contract" / "reports.py"])
PREPROCESS_WAIT = timedelta(hours=24)  # others wait for rank 0's tokenization this long at most
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".gguf")


@dataclass(frozen=True)
class CacheMeta(JsonRecord):
    """`meta.json` of a cache entry: what the tokenized rows came with."""

    label_names: list[str] | None
    stats: DataStats


def cache_root() -> Path:
    """The preprocessed data's cache (`cache_base`: must be shared by all nodes to share)."""
    return cache_base() / "preprocessed"


def cache_key(recipe: Recipe, plan: Plan) -> str:
    """A digest of every input that changes the tokenized examples."""
    digest = hashlib.sha256()
    settings = {"task": recipe.task.model_dump(mode="json"),
                "data": recipe.data.model_dump(mode="json")}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for role, paths in (("train", recipe.data.train), ("eval", recipe.data.eval)):
        for path in paths:
            digest.update(HubData.parse(path, role).fingerprint().encode() if is_hub_data(path)
                          else _file_digest(Path(path)))
    tokenizer = Path(plan.tokenizer_path)
    if tokenizer.is_dir():
        for path in sorted(tokenizer.iterdir()):
            if path.is_file() and not path.name.endswith(WEIGHT_SUFFIXES):
                digest.update(path.name.encode() + _file_digest(path))
    else:
        digest.update(plan.tokenizer_path.encode())  # a hub id: its revision is not known here
    for path in CODE_FILES:
        digest.update(_file_digest(path))
    return digest.hexdigest()[:24]


def _file_digest(path: Path) -> bytes:
    """A file's content digest; a folder's (an image folder) from its files' names, sizes and
    modification times (reading every image would cost as much as decoding them)."""
    digest = hashlib.sha256()
    if path.is_dir():
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            stat = item.stat()
            digest.update(f"{item.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
                          .encode())
        return digest.digest()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


def encode_cached(task: Task, tokenizer: Any, recipe: Recipe, plan: Plan,
                   accelerator: Accelerator, events: EventLog, watchdog: Watchdog) -> EncodedData:
    """The task's encoded data, from the cache when an entry for these inputs exists.

    Rank 0 tokenizes while the others wait in a barrier of their own, with a long timeout
    (the hang watchdog, not a collective timeout, catches a rank 0 that stopped progressing);
    a rank that cannot see rank 0's entry (a cache not shared across nodes) tokenizes itself.
    """
    watchdog.progress(Phase.PREPROCESS)
    # Hashing the data files is I/O over all of them: rank 0 does it and tells the others.
    key = broadcast_object_list([cache_key(recipe, plan) if accelerator.is_main_process
                                 else None])[0]
    entry = cache_root() / key
    encoded = None
    if accelerator.is_main_process:
        encoded = _encode_or_load(task, tokenizer, entry, events, watchdog, save=True)
    if plan.world_size > 1:
        group = torch.distributed.new_group(backend="gloo", timeout=PREPROCESS_WAIT)
        torch.distributed.barrier(group=group)
        torch.distributed.destroy_process_group(group)
    if encoded is None:
        encoded = _encode_or_load(task, tokenizer, entry, events, watchdog, save=False)
    return encoded


def _encode_or_load(task: Task, tokenizer: Any, entry: Path, events: EventLog,
                     watchdog: Watchdog, *, save: bool) -> EncodedData:
    if (entry / "meta.json").is_file():
        events.message(f"preprocessing: reused the cached examples {entry}")
        return _load(entry)
    events.message("preprocessing: encoding the data (cached for later launches)")
    task.report_progress = _throttled(events, watchdog)
    encoded = task.encode_data(tokenizer)
    if save:
        _save(encoded, entry)
        events.message(f"preprocessing: {len(encoded.train)} train / {len(encoded.eval)} "
                       f"eval examples cached in {entry}")
    return encoded


def _throttled(events: EventLog, watchdog: Watchdog,
               every_s: float = 1.0) -> Callable[[str, int, int], None]:
    """A progress reporter writing a `preprocess` event at most once a second (and at the end)."""
    last = [0.0]

    def report(what: str, done: int, total: int) -> None:
        watchdog.progress(Phase.PREPROCESS)
        now = time.monotonic()
        if done == total or now - last[0] >= every_s:
            last[0] = now
            events.write(Preprocessing(what=what, done=done, total=total))

    return report


def _save(encoded: EncodedData, entry: Path) -> None:
    tmp = entry.with_name(f".{entry.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, rows in (("train", encoded.train), ("eval", encoded.eval)):
        if rows:
            from datasets import Dataset  # only to write an entry: reading needs pyarrow alone

            Dataset.from_list(list(rows)).save_to_disk(str(tmp / name))
    CacheMeta(label_names=encoded.label_names, stats=encoded.stats).write(tmp / "meta.json")
    try:
        tmp.rename(entry)
    except OSError:  # another launch wrote the same entry first: theirs is as good
        shutil.rmtree(tmp, ignore_errors=True)


def _load(entry: Path) -> EncodedData:
    meta = CacheMeta.read(entry / "meta.json")

    def rows(name: str) -> Any:
        return ArrowRows(entry / name) if (entry / name).is_dir() else []

    return EncodedData(train=rows("train"), eval=rows("eval"), label_names=meta.label_names,
                    stats=meta.stats)
