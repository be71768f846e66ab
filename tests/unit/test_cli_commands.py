"""The README's planning commands, through the real CLI: `sft-launch plan` and `schema`."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import REPO, assert_one_error, cli_env
from tests.helpers.llama_configs import LLAMA_70B

QUICKSTART = REPO / "recipes" / "quickstart.toml"


def test_plan_shows_every_strategy_and_the_choice(run_cli) -> None:
    result = run_cli("plan", QUICKSTART)
    assert result.returncode == 0, result.stderr
    out = result.stderr
    assert "22,713,986 parameters, 2 processes (1 x 2), fp32" in out
    assert ("batch: global 32 = micro 16 x accumulation 1 x world 2, micro-batches of at most "
            "1,024 tokens") in out
    for label in ("ddp", "zero2", "fsdp", "zero3", "zero3+offload"):
        assert f"│ {label} " in out, label
    assert "strategy: ddp (set in the recipe)" in out


def test_plan_auto_takes_the_fastest_that_fits(run_cli) -> None:
    """550 MiB per device: DDP (536 MiB) is over the 90% usable, ZeRO-2 (449 MiB) fits."""
    result = run_cli("plan", QUICKSTART, "--set", "distributed.strategy=auto",
                     "--device-memory", "550MiB")
    assert result.returncode == 0, result.stderr
    assert "strategy: zero2 (auto: zero2 is the fastest strategy that fits in memory)" in (
        result.stderr)


def test_plan_auto_sizes_a_lora_run_by_its_adapters(run_cli) -> None:
    """With LoRA only the adapters have gradients and optimizer state: DDP (281 MiB) fits in the
    same 550 MiB that the full fine-tune above needs ZeRO-2 for, and the table says so too."""
    result = run_cli("plan", QUICKSTART, "--set", "distributed.strategy=auto",
                     "--set", "model.lora.r=8", "--device-memory", "550MiB")
    assert result.returncode == 0, result.stderr
    assert "strategy: ddp (auto: ddp is the fastest strategy that fits in memory)" in (
        result.stderr)
    assert "│ ddp           │ 87.9 MiB │   1.3 MiB │   2.6 MiB │" in result.stderr


def test_plan_sizes_a_70b_model_across_nodes(run_cli, tmp_path: Path) -> None:
    model = tmp_path / "llama-70b"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(LLAMA_70B))
    result = run_cli("plan", REPO / "recipes" / "alpaca-tiny-llama.toml", "--nodes", "8",
                     "--procs-per-node", "8", "--device-memory", "80GiB",
                     "--set", f"model.path='{model}'", "--set", "distributed.strategy=auto",
                     "--set", "train.global_batch_size=64", "--set", "data.max_length=4096",
                     "--set", "train.activation_checkpointing=true",
                     "--set", "train.precision=bf16")
    assert result.returncode == 0, result.stderr
    assert "68,976,648,192 parameters, 64 processes (8 x 8), bf16" in result.stderr
    assert "device memory: 80.0 GiB; strategy: fsdp (auto:" in result.stderr


def test_plan_of_a_hub_id_not_in_the_offline_cache(run_cli, tmp_path: Path) -> None:
    result = run_cli("plan", QUICKSTART, "--set", "model.path='org/not-here'",
                     env=cli_env(HF_HOME=str(tmp_path)))
    assert_one_error(result, "model.path", "org/not-here is not in the Hugging Face cache",
                     str(tmp_path / "hub"))


def test_schema_is_json_schema_of_the_recipe(run_cli) -> None:
    result = run_cli("schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert set(schema["properties"]) >= {"model", "task", "data", "train", "distributed"}
