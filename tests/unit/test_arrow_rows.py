"""The preprocessing cache read with pyarrow gives the rows `datasets` gives, in order."""

from __future__ import annotations

from pathlib import Path

import pytest
from datasets import Dataset, load_from_disk

from launcher.worker.arrow_rows import ArrowRows


def test_rows_equal_datasets_rows(tmp_path: Path) -> None:
    rows = [{"input_ids": list(range(i % 7 + 1)), "labels": [i] * (i % 3 + 1), "label": i % 2}
            for i in range(2500)]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "train"), max_shard_size="20KB")
    assert len(list((tmp_path / "train").glob("*.arrow"))) > 1  # several files, concatenated
    ours, theirs = ArrowRows(tmp_path / "train"), load_from_disk(str(tmp_path / "train"))
    assert len(ours) == len(theirs) == 2500
    assert list(ours) == list(theirs) == rows
    assert [ours[i] for i in (0, 1234, 2499, -1)] == [theirs[i] for i in (0, 1234, 2499, -1)]
    with pytest.raises(IndexError):
        ours[2500]
