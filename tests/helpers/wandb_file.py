"""Read W&B offline run files (``run-<id>.wandb``) in tests, without the wandb service.

The layout is wandb's private one, checked against wandb 0.31.0 (pin wandb for tests that use
this): a 7-byte header (``:W&B``, magic 0xBEE1 as u16 LE, version 0), then the whole file,
header included, is cut into 32 KiB blocks of LevelDB-log chunks
``checksum (u32 LE) | length (u16 LE) | type (u8) | data`` with type 1 full, 2 first, 3 middle,
4 last; a block tail shorter than a chunk header is zero padding. The checksum is zlib's CRC-32
of the type byte then the data (not LevelDB's masked CRC-32C). Each reassembled record is a
``wandb.proto.wandb_internal_pb2.Record``. Any mismatch raises ValueError.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

from wandb.proto.wandb_internal_pb2 import ConfigItem, HistoryItem, Record

_HEADER = struct.Struct("<4sHB")
_CHUNK = struct.Struct("<IHB")
_MAGIC, _VERSION = (b":W&B", 0xBEE1), 0
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _payloads(data: bytes, path: Path) -> list[bytes]:
    """The reassembled records of a LevelDB log that starts after the file header."""
    payloads: list[bytes] = []
    pending: list[bytes] | None = None
    pos = _HEADER.size
    while pos < len(data):
        room = _BLOCK - pos % _BLOCK
        if room < _CHUNK.size:
            if data[pos:pos + room].strip(b"\0"):
                raise ValueError(f"{path}: non-zero block padding at byte {pos}")
            pos += room
            continue
        if pos + _CHUNK.size > len(data):
            raise ValueError(f"{path}: truncated chunk header at byte {pos}")
        checksum, length, kind = _CHUNK.unpack_from(data, pos)
        chunk = data[pos + _CHUNK.size:pos + _CHUNK.size + length]
        if len(chunk) != length or checksum != zlib.crc32(chunk, zlib.crc32(bytes([kind]))):
            raise ValueError(f"{path}: truncated or corrupt chunk at byte {pos}")
        pos += _CHUNK.size + length
        if kind == _FULL and pending is None:
            payloads.append(chunk)
        elif kind == _FIRST and pending is None:
            pending = [chunk]
        elif kind in (_MIDDLE, _LAST) and pending is not None:
            pending.append(chunk)
            if kind == _LAST:
                payloads.append(b"".join(pending))
                pending = None
        else:
            raise ValueError(f"{path}: unexpected chunk type {kind} at byte {pos}")
    if pending is not None:
        raise ValueError(f"{path}: the last record is incomplete")
    return payloads


def read_records(path: Path) -> list[Record]:
    """Every record of a .wandb file, in order."""
    data = Path(path).read_bytes()
    if len(data) < _HEADER.size:
        raise ValueError(f"{path}: too short for a .wandb header")
    ident, magic, version = _HEADER.unpack_from(data)
    if (ident, magic) != _MAGIC or version != _VERSION:
        raise ValueError(f"{path}: not a version {_VERSION} .wandb file: {data[:7]!r}")
    records = []
    for payload in _payloads(data, path):
        record = Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


def _set(tree: dict[str, object], keys: list[str], value: object) -> None:
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
    tree[keys[-1]] = value


def _keys(item: HistoryItem | ConfigItem) -> list[str]:
    return [item.key] if item.key else list(item.nested_key)


def _value(item: HistoryItem) -> object:
    """A history value: value_json, or one of the typed fields when the writer used those."""
    kind = item.WhichOneof("value")
    if kind is None:
        return json.loads(item.value_json)
    if kind == "none":
        return None
    return json.loads(item.json) if kind == "json" else getattr(item, kind)


def read_history(path: Path) -> list[dict[str, object]]:
    """One dict per logged row (with _step, _runtime, _timestamp); nested keys as nested dicts."""
    rows = []
    for record in read_records(path):
        if record.WhichOneof("record_type") == "history":
            row: dict[str, object] = {}
            for item in record.history.item:
                _set(row, _keys(item), _value(item))
            rows.append(row)
    return rows


def read_config(path: Path) -> dict[str, object]:
    """The run config: the run record's, then each config update and removal in order.

    wandb's own ``_wandb`` entry is left out.
    """
    config: dict[str, object] = {}
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind not in ("run", "config"):
            continue
        changes = record.run.config if kind == "run" else record.config
        if changes.remove:
            raise ValueError(f"{path}: config removals are not supported (wandb 0.31 has none)")
        for item in changes.update:
            _set(config, _keys(item), json.loads(item.value_json))
    config.pop("_wandb", None)
    return config


def find_run_files(wandb_dir: Path) -> list[Path]:
    """All ``offline-run-*/run-*.wandb`` files below a folder, sorted by path (run folders
    are named by start time)."""
    return sorted(Path(wandb_dir).rglob("offline-run-*/run-*.wandb"))


def read_run_id(path: Path) -> str:
    """The W&B run id a run file belongs to (its run record's)."""
    for record in read_records(path):
        if record.WhichOneof("record_type") == "run":
            return record.run.run_id
    raise ValueError(f"{path}: no run record")


def logged_steps(wandb_dir: Path, key: str) -> list[int]:
    """The `_step` of every row holding `key`, over all the run files below `wandb_dir`."""
    return sorted(int(row["_step"]) for path in find_run_files(wandb_dir)
                  for row in read_history(path) if key in row)


def logged_table(wandb_dir: Path, key: str) -> tuple[list[str], list[list[object]],
                                                   dict[str, Path]]:
    """The last table logged under `key`, from the run-table artifact W&B makes of it: its
    columns, its rows (media cells as W&B's references, ``{"_type": "image-file", "path":
    ...}``) and where each file of the artifact waits for `wandb sync` (path -> local file)."""
    found = None
    name = key.replace("/", "")
    for path in find_run_files(wandb_dir):
        for record in read_records(path):
            if record.WhichOneof("record_type") == "artifact" and \
                    record.artifact.type == "run_table" and name in record.artifact.name:
                found = {entry.path: Path(entry.local_path)
                         for entry in record.artifact.manifest.contents}
    if found is None:
        raise ValueError(f"{wandb_dir}: no table under {key!r}")
    table = json.loads(found[f"{key}.table.json"].read_text())
    return table["columns"], table["data"], found
