"""End-to-end fixtures: real `sft-launch` runs with real worker processes (gloo on CPU)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.planner.model_shape import read_model_shape
from tests.conftest import REPO, SFT_LAUNCH, cli_env

QUICKSTART = REPO / "recipes" / "quickstart.toml"
ALPACA = REPO / "recipes" / "alpaca-tiny-llama.toml"


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-init Llama + BPE tokenizer trained on the alpaca demo data, made by
    `sft-launch make-tiny-model` as the README says."""
    out = tmp_path_factory.mktemp("tiny-llama") / "model"
    made = subprocess.run([*SFT_LAUNCH, "make-tiny-model", out, "--hidden", "64", "--layers",
                           "2", "--heads", "4", "--vocab-size", "512"], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    count = int(re.search(r"wrote a ([\d,]+)-parameter Llama", made.stderr).group(1)
                .replace(",", ""))
    assert read_model_shape(out, task="causal_lm").num_parameters == count
    return out


@pytest.fixture(scope="session")
def whisper_tiny_en(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OpenAI's Whisper tiny.en, converted by `make models`' converter from its registry
    package (the real pretrained weights, tokenizer and feature extractor)."""
    out = tmp_path_factory.mktemp("models") / "whisper-tiny.en"
    made = subprocess.run([sys.executable, str(REPO / "models" / "convert_whisper_tiny_en.py"),
                           str(out)], cwd=REPO, env=cli_env(), capture_output=True, text=True,
                          timeout=300)
    assert made.returncode == 0, made.stdout + made.stderr
    return out
