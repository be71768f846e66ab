"""The .wandb reader against a real offline run of the wandb SDK in use."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers.wandb_file import find_run_files, read_config, read_history, read_records

BLOCK = 32 * 1024
RUN = textwrap.dedent("""
    import wandb
    run = wandb.init(project="t", config={"lr": 0.1, "nested": {"a": 1}})
    for step in range(5):
        row = {"train/loss": 1.0 / (step + 1), "lr": 0.1 * step, "eval": {"acc": step / 4}}
        if step == 2:
            row["blob"] = "x" * 80_000  # one record over two blocks: first, middle, last chunks
        run.log(row)
    run.config.update({"later": [1, 2]})
    run.finish()
""")


@pytest.fixture(scope="module")
def run_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wandb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", WANDB_DIR=str(root), WANDB_SILENT="true",
               WANDB_CONFIG_DIR=str(root / "config"), WANDB_CACHE_DIR=str(root / "cache"),
               WANDB_DATA_DIR=str(root / "data"))
    subprocess.run([sys.executable, "-c", RUN], env=env, check=True, timeout=300)
    files = find_run_files(root)
    assert len(files) == 1 and files[0].parent.name.startswith("offline-run-")
    return files[0]


def test_history_rows(run_file: Path) -> None:
    rows = read_history(run_file)
    assert [row["_step"] for row in rows] == [0, 1, 2, 3, 4]
    assert [row["train/loss"] for row in rows] == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert [row["lr"] for row in rows] == [0.1 * step for step in range(5)]
    assert [row["eval"] for row in rows] == [{"acc": step / 4} for step in range(5)]
    assert rows[2]["blob"] == "x" * 80_000 and "blob" not in rows[3]
    assert all(isinstance(row["_runtime"], float | int) for row in rows)


def test_config(run_file: Path) -> None:
    assert read_config(run_file) == {"lr": 0.1, "nested": {"a": 1}, "later": [1, 2]}


def test_records_span_blocks(run_file: Path) -> None:
    records = read_records(run_file)
    assert run_file.stat().st_size > 2 * BLOCK
    assert max(record.ByteSize() for record in records) > 2 * BLOCK  # has a middle chunk
    assert records[0].WhichOneof("record_type") == "header"
    assert [r.run.project for r in records if r.WhichOneof("record_type") == "run"] == ["t"]


def test_rejects_damage(run_file: Path, tmp_path: Path) -> None:
    data = bytearray(run_file.read_bytes())
    bad = tmp_path / "bad.wandb"
    bad.write_bytes(b"LEVELDB" + data[7:])
    with pytest.raises(ValueError, match=r"not a version 0 \.wandb file"):
        read_records(bad)
    data[BLOCK + 100] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt chunk"):
        read_records(bad)
    bad.write_bytes(run_file.read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_records(bad)
