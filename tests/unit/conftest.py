"""Shared fixtures of the unit tests: fixture data, the tiny tokenizer and model (built once).

torch and transformers are imported only by the fixtures that need them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.llama_configs import LLAMA_7B, LLAMA_70B

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def llama_7b(tmp_path: Path) -> Any:
    """Llama 2 7B's shape, read from its config.json by the plan."""
    return _shape(tmp_path, LLAMA_7B)


@pytest.fixture
def llama_70b(tmp_path: Path) -> Any:
    """Llama 2 70B's shape (grouped-query attention), read from its config.json by the plan."""
    return _shape(tmp_path, LLAMA_70B)


def _shape(folder: Path, config: dict[str, Any]) -> Any:
    from launcher.planner.model_shape import read_model_shape

    (folder / "config.json").write_text(json.dumps(config))
    return read_model_shape(folder)


@pytest.fixture(scope="session")
def fixture_data() -> Path:
    return Path(__file__).resolve().parents[1] / "fixtures" / "data"


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers.tiny_lm import build_tokenizer

    out = tmp_path_factory.mktemp("tiny-tokenizer")
    build_tokenizer(out)
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Any) -> Path:
    from tests.helpers.tiny_lm import build_tiny_llama

    out = tmp_path_factory.mktemp("tiny-llama")
    build_tiny_llama(out, tiny_tokenizer)
    return out
