"""Every strategy on 2 CPU processes over gloo: same results as DDP, real sharding, resume."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, SFT_LAUNCH, cli_env
from tests.e2e.conftest import QUICKSTART, rank_reports, read_events, read_json

pytestmark = pytest.mark.slow
STEPS, SAVE_EVERY = 6, 3
OFFLOAD = ["--set", "distributed.offload_optimizer=true",
           "--set", "distributed.offload_params=true"]
STRATEGIES = {"ddp": [], "fsdp": [], "zero2": [], "zero3": [], "zero3_offload": OFFLOAD}
# fp32 on CPU; differences come from the order of floating-point reductions only.
WEIGHT_TOLERANCE, EVAL_LOSS_TOLERANCE = 1e-4, 1e-3


def launch(strategy: str, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    name = "zero3" if strategy == "zero3_offload" else strategy
    args = [*SFT_LAUNCH, QUICKSTART, "--backend", "local", "--run-dir", run_dir, "--quiet",
            "--set", f"distributed.strategy={name}", *STRATEGIES[strategy],
            "--set", "data.max_train_samples=192", "--set", "data.max_eval_samples=64",
            "--set", f"train.max_steps={STEPS}", "--set", f"train.save_every={SAVE_EVERY}",
            "--set", "train.log_every=1", "--set", "tracking.mode=disabled", *extra]
    return subprocess.run(args, cwd=REPO, env=cli_env(), capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("strategies")
    for strategy in STRATEGIES:
        result = launch(strategy, root / strategy)
        assert result.returncode == 0, f"{strategy}:\n{result.stdout}{result.stderr}"
    return {strategy: root / strategy for strategy in STRATEGIES}


def final_weights(run_dir: Path) -> dict:
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(run_dir / "final").state_dict()


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "ddp"])
def test_final_weights_and_eval_loss_agree_with_ddp(runs: dict[str, Path], strategy: str) -> None:
    reference, weights = final_weights(runs["ddp"]), final_weights(runs[strategy])
    assert weights.keys() == reference.keys()
    worst = max((weights[k] - reference[k]).abs().max().item() for k in reference)
    assert worst < WEIGHT_TOLERANCE, f"{strategy}: max |w - w_ddp| = {worst}"
    changed = max((reference[k] - v).abs().max().item()
                  for k, v in final_weights_base(runs["ddp"]).items() if k in reference)
    assert changed > 100 * WEIGHT_TOLERANCE, "training barely moved the weights: test is blind"
    ddp_loss = read_json(runs["ddp"] / "summary.json")["eval_loss"]
    loss = read_json(runs[strategy] / "summary.json")["eval_loss"]
    assert abs(loss - ddp_loss) < EVAL_LOSS_TOLERANCE


def final_weights_base(run_dir: Path) -> dict:
    from transformers import AutoModelForSequenceClassification

    plan = read_json(run_dir / "plan.json")
    return AutoModelForSequenceClassification.from_pretrained(plan["model_path"],
                                                              num_labels=2).state_dict()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_worker_reports_the_active_strategy(runs: dict[str, Path], strategy: str) -> None:
    reports = rank_reports(runs[strategy])
    assert [r["rank"] for r in reports] == [0, 1]
    expected = "zero3" if strategy == "zero3_offload" else strategy
    assert {r["strategy"] for r in reports} == {expected}
    assert read_json(runs[strategy] / "summary.json")["strategy"] == expected


def test_sharding_is_real(runs: dict[str, Path]) -> None:
    def rank0(strategy: str) -> dict:
        return rank_reports(runs[strategy])[0]

    total = rank0("ddp")["local_param_numel"]
    assert total == 22_713_986  # MiniLM + a 2-label head: the whole model on every DDP rank
    for strategy in ("fsdp", "zero3", "zero3_offload"):
        for report in rank_reports(runs[strategy]):
            assert report["local_param_numel"] == pytest.approx(total / 2, rel=0.01), strategy
    assert rank0("zero2")["local_param_numel"] == total  # ZeRO-2 keeps whole parameters
    ddp_state = rank0("ddp")["memory_bytes"]["optimizer_state"]
    assert ddp_state == 8 * total  # Adam moments, fp32, unsharded
    for strategy in ("zero2", "zero3", "fsdp"):
        state = rank0(strategy)["memory_bytes"]["optimizer_state"]
        assert state == pytest.approx(ddp_state / 2, rel=0.01), strategy
    assert rank0("zero2")["memory_bytes"]["grads"] == pytest.approx(4 * total / 2, rel=0.01)
    assert rank0("fsdp")["memory_bytes"]["grads"] == pytest.approx(4 * total / 2, rel=0.01)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_interrupted_after_a_checkpoint_resumes_and_finishes(runs: dict[str, Path],
                                                             strategy: str,
                                                             tmp_path: Path) -> None:
    """The state after a crash past step 3's checkpoint: no step-6 checkpoint, no final model."""
    run_dir = tmp_path / strategy
    shutil.copytree(runs[strategy], run_dir)
    shutil.rmtree(run_dir / "checkpoints" / f"step-{STEPS}")
    shutil.rmtree(run_dir / "final")
    (run_dir / "summary.json").unlink()
    before = len(read_events(run_dir))
    result = launch(strategy, run_dir, "--resume")
    assert result.returncode == 0, result.stdout + result.stderr
    events = read_events(run_dir)[before:]
    assert next(e for e in events if e["event"] == "start")["step"] == SAVE_EVERY
    assert [e["step"] for e in events if e["event"] == "train"] == list(
        range(SAVE_EVERY + 1, STEPS + 1))
    original = read_json(runs[strategy] / "summary.json")["eval_loss"]
    assert read_json(run_dir / "summary.json")["eval_loss"] == pytest.approx(original, abs=1e-5)


def test_resume_refuses_a_different_plan(runs: dict[str, Path], tmp_path: Path) -> None:
    run_dir = tmp_path / "ddp"
    shutil.copytree(runs["ddp"], run_dir)
    result = launch("zero2", run_dir, "--resume")
    assert result.returncode == 2
    assert "strategy: ddp -> zero2" in result.stderr


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_memory_plan_matches_the_bytes_each_rank_holds(runs: dict[str, Path],
                                                       strategy: str) -> None:
    """plan.json's per-rank estimate vs sum(numel x element size) measured in the run: 5%."""
    estimate = read_json(runs[strategy] / "plan.json")["memory"]["estimates"][strategy]
    for report in rank_reports(runs[strategy]):
        measured = report["memory_bytes"]
        optimizer = measured["optimizer_state"] + measured["master_params"]
        if strategy == "zero3_offload":  # all of it lives in host memory, 1/N per rank
            held = measured["params"] + measured["grads"] + optimizer
            assert held == pytest.approx(estimate["host_bytes"], rel=0.05)
            continue
        assert measured["params"] == pytest.approx(estimate["params_bytes"], rel=0.05)
        assert measured["grads"] == pytest.approx(estimate["grads_bytes"], rel=0.05)
        assert optimizer == pytest.approx(estimate["optimizer_bytes"], rel=0.05)
