"""Which cache entry holds a run's preprocessed data, torch-free: the workers read and write it
(`launcher.worker.preprocess`), the control plane asks whether it is complete before it submits a
data preparation job.

The key covers everything the examples depend on: the data files' bytes (a Hub dataset's
`datasets` fingerprint), the tokenizer's files, the recipe's data and task settings, and the
preprocessing code itself.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from launcher.contract.cache import cache_base
from launcher.contract.plan import Plan
from launcher.data.hub_data import HubData, is_hub_data
from launcher.recipe.schema import Recipe

CODE = Path(__file__).resolve().parents[1]
CODE_FILES = sorted([*(CODE / "data").rglob("*.py"), *(CODE / "tasks").glob("*.py"),
                     CODE / "contract" / "reports.py"])
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".gguf")
COMPLETE_MARK = "meta.json"  # written last: an entry holding it is complete


def cache_root() -> Path:
    """The preprocessed data's cache (`cache_base`: must be shared by all nodes to share)."""
    return cache_base() / "preprocessed"


def cache_entry(recipe: Recipe, plan: Plan) -> Path:
    """The folder of the run's preprocessed data (it may not exist yet)."""
    return cache_root() / cache_key(recipe, plan)


def is_complete(entry: Path) -> bool:
    """The entry was written to its end (entries appear by a rename, `meta.json` inside)."""
    return (entry / COMPLETE_MARK).is_file()


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
