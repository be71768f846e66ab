"""Causal-LM SFT through the CLI on the alpaca demo data with a tiny local Llama."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from launcher.contract.events import Evaluated
from tests.conftest import REPO, cli_env
from tests.e2e.conftest import ALPACA
from tests.helpers.run_folder import events, of_kind, rank_reports, summary
from tests.helpers.wandb_file import find_run_files, read_history

pytestmark = pytest.mark.slow


def test_alpaca_sft_runs_and_the_model_reloads(run_cli, tiny_llama: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli(ALPACA, "--backend", "local", "--run-dir", run_dir, "--quiet",
                     "--set", f"model.path='{tiny_llama}'", "--set", "train.max_steps=6",
                     "--set", "data.max_train_samples=200", "--set", "data.max_length=128",
                     "--set", "tracking.mode=disabled")
    assert result.returncode == 0, result.stdout + result.stderr
    done = summary(run_dir)
    assert done.steps == 6
    assert done.eval["perplexity"] > 1.0
    assert done.data.eval_rows == 10  # 5% of 200, held out by seed
    reports = rank_reports(run_dir)
    assert len({r.final_weights_sha256 for r in reports}) == 1
    script = f"""
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained({str(run_dir / 'final')!r})
model = AutoModelForCausalLM.from_pretrained({str(run_dir / 'final')!r})
ids = tok.apply_chat_template([{{"role": "user", "content": "Hi"}}], add_generation_prompt=True,
                              return_tensors="pt", return_dict=True)["input_ids"]
out = model.generate(ids, max_new_tokens=5, do_sample=False)
print(out.shape[1] - ids.shape[1])
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=cli_env(), cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip().splitlines()[-1]) >= 1


def test_only_response_tokens_carry_loss(tiny_llama: Path, tmp_path: Path) -> None:
    """The worker's own prepared examples: decoded loss tokens == each response + end of turn."""
    from launcher.contract.vocabulary import BackendKind
    from launcher.data.formats import load_rows
    from launcher.plan.plan import make_plan
    from launcher.recipe.load import load_recipe
    from launcher.tasks.causal_lm import CausalLM

    recipe = load_recipe(ALPACA, [f"model.path='{tiny_llama}'", "data.max_train_samples=40",
                                  "data.max_length=2048", "data.eval_fraction=0.1"])
    plan = make_plan(recipe, recipe_file=str(ALPACA), backend=BackendKind.LOCAL, gpus_here=0)
    task = CausalLM(recipe, plan)
    tokenizer = task.load_tokenizer()
    prepared = task.prepare(tokenizer)
    rows = load_rows(recipe.data.train, "alpaca").rows[:40]
    responses = {row["messages"][-1]["content"] for row in rows}
    assert len(prepared.train) == 36
    for example in prepared.train:
        kept = [t for t, label in zip(example["input_ids"], example["labels"], strict=True)
                if label != -100]
        text = tokenizer.decode(kept)
        assert text.endswith("<|im_end|>")
        assert text.removesuffix("<|im_end|>") in responses


def test_without_eval_data_no_eval_metric_is_reported(run_cli, tiny_llama: Path,
                                                      tmp_path: Path) -> None:
    """Nothing measured, nothing reported: no eval keys in the summary, events or W&B (it once
    said eval_loss 0.0 and eval_perplexity 1.0)."""
    run_dir = tmp_path / "run"
    result = run_cli(ALPACA, "--backend", "local", "--run-dir", run_dir, "--quiet",
                     "--set", f"model.path='{tiny_llama}'", "--set", "train.max_steps=3",
                     "--set", "data.max_train_samples=64", "--set", "data.max_length=128",
                     "--set", "data.eval_fraction=0.0", "--set", "train.eval_every=1",
                     "--set", "train.log_every=1", "--set", "tracking.mode=offline")
    assert result.returncode == 0, result.stdout + result.stderr
    done = summary(run_dir)
    assert done.steps == 3 and done.data.eval_rows == 0
    assert done.eval == {} and done.eval_tables == {}
    assert not of_kind(events(run_dir), Evaluated)
    rows = [row for path in find_run_files(run_dir / "wandb") for row in read_history(path)]
    assert rows and not any(key.startswith("eval") for row in rows for key in row)
    assert "│ eval" not in result.stderr  # no eval row in the final table
