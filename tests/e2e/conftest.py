"""End-to-end fixtures: real `sft-launch` runs with real worker processes (gloo on CPU)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

QUICKSTART = REPO / "recipes" / "quickstart.toml"
ALPACA = REPO / "recipes" / "alpaca-tiny-llama.toml"


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "logs" / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def rank_reports(run_dir: Path) -> list[dict[str, Any]]:
    return [read_json(p) for p in sorted((run_dir / "logs").glob("rank-*.json"))]


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-init Llama + BPE tokenizer trained on the alpaca demo data."""
    from launcher.data.tiny_model import build_tiny_causal_lm, build_tokenizer

    out = tmp_path_factory.mktemp("tiny-llama")
    build_tokenizer([REPO / "recipes/data/alpaca/alpaca_en_demo.json"], out / "tok", 512)
    build_tiny_causal_lm(out / "model", out / "tok", hidden=64, layers=2, heads=4, seed=0)
    return out / "model"
