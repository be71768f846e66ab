"""Rows of a `datasets.save_to_disk` folder, memory-mapped, read with pyarrow alone.

Loading through `datasets` costs its import (0.4-0.5 s of every start); the cache is read here
straight from the Arrow files the folder's `state.json` names. Rows come back as dicts, as a
`datasets.Dataset` gives them; nothing is copied into Python until a row is read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa


class ArrowRows:
    """The rows of one saved split: `len`, indexing and iteration, each row a dict."""

    def __init__(self, folder: Path) -> None:
        state = json.loads((folder / "state.json").read_text())
        tables = [pa.ipc.open_stream(pa.memory_map(str(folder / f["filename"]))).read_all()
                  for f in state["_data_files"]]
        self.table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"row {index} of {len(self)}")
        return self.table.slice(index % len(self), 1).to_pylist()[0]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.table.to_batches(max_chunksize=1024):
            yield from batch.to_pylist()
