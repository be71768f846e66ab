"""Causal-LM SFT through the CLI on the alpaca demo data with a tiny local Llama."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.contract.events import Evaluated, Generated, TrainLogged
from launcher.contract.vocabulary import Strategy
from tests.conftest import REPO, cli_env
from tests.e2e.conftest import ALPACA
from tests.helpers.run_folder import events, of_kind, rank_reports, summary
from tests.helpers.wandb_file import find_run_files, read_history

pytestmark = pytest.mark.slow


def test_alpaca_sft_runs_and_the_model_reloads(run_cli, tiny_llama: Path, tmp_path: Path) -> None:
    """Sharded (FSDP2) SFT with generations at each evaluation; the final model reloads in
    transformers and, greedily, continues the logged prompts as the sharded model did."""
    run_dir = tmp_path / "run"
    result = run_cli(ALPACA, "--backend", "local", "--run-dir", run_dir,
                     "--set", f"model.path='{tiny_llama}'", "--set", "train.max_steps=6",
                     "--set", "data.max_train_samples=200", "--set", "data.max_length=128",
                     "--set", "distributed.strategy=fsdp", "--set", "train.eval_every=3",
                     "--set", "train.generation_prompts=2",
                     "--set", "train.generation_max_tokens=8",
                     "--set", "tracking.mode=offline")
    assert result.returncode == 0, result.stdout + result.stderr
    done = summary(run_dir)
    assert done.steps == 6 and done.strategy == Strategy.FSDP
    assert done.eval["perplexity"] > 1.0
    assert done.data.eval_rows == 10  # 5% of 200, held out by seed
    held = [r.local_param_numel for r in rank_reports(run_dir)]
    generated = of_kind(events(run_dir), Generated)
    assert [g.step for g in generated] == [3, 6] and all(len(g.generations) == 2
                                                          for g in generated)
    last = generated[-1].generations
    assert all(s.reference and s.prompt.endswith("assistant\n") for s in last), last
    assert "step 6: generations" in result.stdout + result.stderr  # shown while it runs
    tables = sorted((run_dir / "wandb").glob(
        "offline-run-*/files/media/table/eval/generations_*.json"))
    assert len(tables) == 2
    logged = json.loads(tables[-1].read_text())
    assert [row[2] for row in logged["data"]] == [s.completion for s in last]
    script = f"""
import json, sys
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained({str(run_dir / 'final')!r})
model = AutoModelForCausalLM.from_pretrained({str(run_dir / 'final')!r})
print(sum(p.numel() for p in model.parameters()))
for prompt in json.loads(sys.stdin.read()):
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=8, do_sample=False,
                         pad_token_id=tok.pad_token_id)
    print(json.dumps(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=cli_env(), cwd=REPO, input=json.dumps([s.prompt for s in last]))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert [json.loads(line) for line in lines[-2:]] == [s.completion for s in last]
    assert held == [pytest.approx(int(lines[-3]) / 2, rel=0.05)] * 2  # each rank: half


def test_only_response_tokens_carry_loss(tiny_llama: Path, tmp_path: Path) -> None:
    """The worker's own encoded examples: decoded loss tokens == each response + end of turn."""
    from launcher.contract.vocabulary import BackendKind
    from launcher.data.formats import load_rows
    from launcher.planner.make import make_plan
    from launcher.recipe.load import load_recipe
    from launcher.tasks.causal_lm import CausalLM

    recipe = load_recipe(ALPACA, [f"model.path='{tiny_llama}'", "data.max_train_samples=40",
                                  "data.max_length=2048", "data.eval_fraction=0.1"])
    plan = make_plan(recipe, recipe_file=str(ALPACA), backend=BackendKind.LOCAL, gpus_here=0)
    task = CausalLM(recipe, plan)
    tokenizer = task.load_tokenizer()
    encoded = task.encode_data(tokenizer)
    rows = load_rows(recipe.data.train, "alpaca").rows[:40]
    responses = {row["messages"][-1]["content"] for row in rows}
    assert len(encoded.train) == 36
    for example in encoded.train:
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
                     "--set", "data.eval_fraction=0.0", "--set", "train.generation_prompts=0",
                     "--set", "train.eval_every=1",
                     "--set", "train.log_every=1", "--set", "tracking.mode=offline")
    assert result.returncode == 0, result.stdout + result.stderr
    done = summary(run_dir)
    assert done.steps == 3 and done.data.eval_rows == 0
    assert done.eval == {} and done.eval_tables == {}
    assert not of_kind(events(run_dir), Evaluated)
    rows = [row for path in find_run_files(run_dir / "wandb") for row in read_history(path)]
    assert rows and not any(key.startswith("eval") for row in rows for key in row)
    assert "│ eval" not in result.stderr  # no eval row in the final table


def test_a_token_budget_cuts_micro_batches_and_changes_nothing_else(
        run_cli, tiny_llama: Path, tmp_path: Path) -> None:
    """2 DDP processes, 8 padded rows each per step: one micro-batch of 8 (budget off) against
    micro-batches of at most 300 tokens, as many as each rank's lengths need (not the same
    number on both ranks), gradients synchronised once per step. The same weights on both
    ranks and as without the budget, the same losses; less padding computed."""
    runs = {}
    for budget in (0, 300):
        runs[budget] = run_dir = tmp_path / f"budget-{budget}"
        result = run_cli(ALPACA, "--backend", "local", "--run-dir", run_dir,
                         "--set", f"model.path='{tiny_llama}'", "--set", "train.max_steps=5",
                         "--set", "data.max_train_samples=160", "--set", "data.max_length=128",
                         "--set", "task.packing=false", "--set", "train.global_batch_size=16",
                         "--set", f"train.micro_batch_tokens={budget}",
                         "--set", "train.log_every=1", "--set", "tracking.mode=disabled")
        assert result.returncode == 0, result.stdout + result.stderr
        assert len({r.final_weights_sha256 for r in rank_reports(run_dir)}) == 1
    cut, whole = (safetensors_weights(runs[b]) for b in (300, 0))
    worst = max((cut[k] - whole[k]).abs().max().item() for k in whole)
    assert worst < 1e-5, f"max |w_cut - w_whole| = {worst}"
    losses = [[e.loss for e in of_kind(events(runs[b]), TrainLogged)] for b in (300, 0)]
    assert len(losses[0]) == 5 and losses[0] == pytest.approx(losses[1], abs=1e-5)
    assert summary(runs[300]).token_efficiency > summary(runs[0]).token_efficiency, (
        "the budget cut no micro-batch")


def safetensors_weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(run_dir / "final" / "model.safetensors")
