"""`checkpoints/step-N/`: complete or absent, with a manifest of every file's size and hash.

A checkpoint is written under a temporary name, its `manifest.json` last, then renamed; a
checkpoint whose files do not match its manifest (truncated, corrupt, half-copied) is skipped
for the previous one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from launcher.contract.records import ContractError, JsonRecord

STEP_DIR = re.compile(r"^step-(\d+)$")
MANIFEST = "manifest.json"
BLOCK = 1 << 22


@dataclass(frozen=True)
class FileDigest:
    size: int
    xxh3: str


@dataclass(frozen=True)
class CheckpointManifest(JsonRecord):
    """What a complete checkpoint holds: the step, the world size it was written at, its files."""

    step: int
    world_size: int
    files: dict[str, FileDigest]


def digest(path: Path) -> FileDigest:
    import xxhash  # fast enough to hash a checkpoint at disk speed (a dependency of datasets)

    hasher = xxhash.xxh3_128()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            hasher.update(block)
    return FileDigest(size=path.stat().st_size, xxh3=hasher.hexdigest())


def write_manifest(folder: Path, step: int, world_size: int) -> CheckpointManifest:
    """Hash every file of `folder` (the manifest last, so it exists only once all do)."""
    files = {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name != MANIFEST}
    manifest = CheckpointManifest(step=step, world_size=world_size, files=files)
    manifest.write(folder / MANIFEST)
    return manifest


def problem(folder: Path, hashes: bool = True) -> str | None:
    """What is wrong with a checkpoint folder (None: complete and intact)."""
    try:
        manifest = CheckpointManifest.read(folder / MANIFEST)
    except ContractError as err:
        return f"no readable manifest ({err})"
    for name, expected in manifest.files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected.size:
            return f"{name} has {path.stat().st_size} bytes, the manifest says {expected.size}"
        if hashes and digest(path).xxh3 != expected.xxh3:
            return f"{name} does not match its hash"
    return None


def checkpoint_folders(root: Path) -> list[tuple[int, Path]]:
    """Renamed (finished writing) checkpoint folders, newest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name))]
    return sorted(found, reverse=True)


def newest_valid(root: Path, hashes: bool = True,
                 skipped: Callable[[Path, str], None] = lambda *_: None,
                 ) -> tuple[Path, CheckpointManifest] | None:
    """The newest checkpoint that matches its manifest; `skipped(folder, why)` for the others."""
    for _, folder in checkpoint_folders(root):
        why = problem(folder, hashes)
        if why is None:
            return folder, CheckpointManifest.read(folder / MANIFEST)
        skipped(folder, why)
    return None


def newest_step(root: Path) -> int:
    """The step of the newest checkpoint whose files are all there, sizes checked (0: none)."""
    found = newest_valid(root, hashes=False)
    return found[1].step if found else 0
