"""Every strategy on 2 CPU processes over gloo: same results as DDP, real sharding, resume."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from launcher.contract.events import Started, TrainLogged
from launcher.contract.reports import RankReport
from launcher.contract.vocabulary import Offload, Strategy
from launcher.planner.memory import CANDIDATES
from tests.conftest import REPO, SFT_LAUNCH, cli_env
from tests.e2e.conftest import QUICKSTART
from tests.helpers.run_folder import events, of_kind, plan, rank_reports, summary

pytestmark = pytest.mark.slow
STEPS, SAVE_EVERY = 6, 3
# fp32 on CPU; differences come from the order of floating-point reductions only.
WEIGHT_TOLERANCE, EVAL_LOSS_TOLERANCE = 1e-4, 1e-3
SHARD_SIZE = "30MB"


def label(strategy: Strategy, offload: tuple[Offload, ...]) -> str:
    """The planner's name of a layout, as `MemoryEstimate.label`: `zero3`, `zero3+offload`."""
    return strategy.value + ("+offload" if offload else "")


# The planner's layouts by label: ddp, zero2, fsdp, zero3, zero3+offload.
LAYOUTS = {label(strategy, offload): (strategy, offload) for strategy, offload in CANDIDATES}


def launch(name: str, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    strategy, offload = LAYOUTS[name]
    offloaded = [arg for what in offload
                 for arg in ("--set", f"distributed.offload_{what.value}=true")]
    args = [*SFT_LAUNCH, QUICKSTART, "--backend", "local", "--run-dir", run_dir, "--quiet",
            "--set", f"distributed.strategy={strategy.value}", *offloaded,
            "--set", "data.max_train_samples=192", "--set", "data.max_eval_samples=64",
            "--set", f"train.max_steps={STEPS}", "--set", f"train.save_every={SAVE_EVERY}",
            "--set", "train.log_every=1", "--set", "tracking.mode=disabled", *extra]
    if name != "ddp":  # the final model in several files (MiniLM is ~91 MB in fp32)
        args += ["--set", f"model.max_shard_size={SHARD_SIZE}"]
    return subprocess.run(args, cwd=REPO, env=cli_env(), capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("strategies")
    folders = {name: root / name.replace("+", "-") for name in LAYOUTS}
    for name, run_dir in folders.items():
        result = launch(name, run_dir)
        assert result.returncode == 0, f"{name}:\n{result.stdout}{result.stderr}"
    return folders


def final_weights(run_dir: Path) -> dict:
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(run_dir / "final").state_dict()


@pytest.mark.parametrize("name", [name for name in LAYOUTS if name != "ddp"])
def test_final_weights_and_eval_loss_agree_with_ddp(runs: dict[str, Path], name: str) -> None:
    reference, weights = final_weights(runs["ddp"]), final_weights(runs[name])
    assert weights.keys() == reference.keys()
    worst = max((weights[k] - reference[k]).abs().max().item() for k in reference)
    assert worst < WEIGHT_TOLERANCE, f"{name}: max |w - w_ddp| = {worst}"
    changed = max((reference[k] - v).abs().max().item()
                  for k, v in final_weights_base(runs["ddp"]).items() if k in reference)
    assert changed > 100 * WEIGHT_TOLERANCE, "training barely moved the weights: test is blind"
    ddp_loss = summary(runs["ddp"]).eval["loss"]
    loss = summary(runs[name]).eval["loss"]
    assert abs(loss - ddp_loss) < EVAL_LOSS_TOLERANCE


def final_weights_base(run_dir: Path) -> dict:
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(plan(run_dir).model_path,
                                                              num_labels=2).state_dict()


@pytest.mark.parametrize("name", ["fsdp", "zero3"])
def test_final_model_is_sharded_safetensors_with_the_models_own_names(
        runs: dict[str, Path], name: str) -> None:
    """`model.max_shard_size` splits the consolidated model into files transformers loads (the
    weights are compared above); every tensor keeps the name DDP's single file gives it."""
    from safetensors import safe_open

    final = runs[name] / "final"
    files = sorted(final.glob("model-*-of-*.safetensors"))
    index = json.loads((final / "model.safetensors.index.json").read_text())
    assert len(files) >= 2
    assert set(index["weight_map"].values()) == {f.name for f in files}
    with safe_open(runs["ddp"] / "final" / "model.safetensors", "pt") as single:
        names = set(single.keys())
    assert set(index["weight_map"]) == names
    assert not any(part in ("gamma", "beta") for n in names for part in n.split("."))


@pytest.mark.parametrize("name", LAYOUTS)
def test_worker_reports_the_active_strategy(runs: dict[str, Path], name: str) -> None:
    reports = rank_reports(runs[name])
    assert [r.rank for r in reports] == [0, 1]
    expected, _ = LAYOUTS[name]
    assert {r.strategy for r in reports} == {expected}
    assert summary(runs[name]).strategy == expected


def test_sharding_is_real(runs: dict[str, Path]) -> None:
    def rank0(name: str) -> RankReport:
        return rank_reports(runs[name])[0]

    total = rank0("ddp").local_param_numel
    assert total == 22_713_986  # MiniLM + a 2-label head: the whole model on every DDP rank
    for name in ("fsdp", "zero3", "zero3+offload"):
        for report in rank_reports(runs[name]):
            assert report.local_param_numel == pytest.approx(total / 2, rel=0.01), name
    assert rank0("zero2").local_param_numel == total  # ZeRO-2 keeps whole parameters
    ddp_state = rank0("ddp").held_bytes.optimizer_state
    assert ddp_state == 8 * total  # Adam moments, fp32, unsharded
    for name in ("zero2", "zero3", "fsdp"):
        state = rank0(name).held_bytes.optimizer_state
        assert state == pytest.approx(ddp_state / 2, rel=0.01), name
    assert rank0("zero2").held_bytes.grads == pytest.approx(4 * total / 2, rel=0.01)
    assert rank0("fsdp").held_bytes.grads == pytest.approx(4 * total / 2, rel=0.01)


# DDP's resume is checked bitwise in test_resume.py; FSDP2's (DCP) across world sizes in
# test_elastic.py; these are DeepSpeed's own checkpoints, at the same world size.
@pytest.mark.parametrize("name", ["zero2", "zero3"])  # offload: zero3's checkpoint code
def test_interrupted_after_a_checkpoint_resumes_and_finishes(runs: dict[str, Path],
                                                             name: str,
                                                             tmp_path: Path) -> None:
    """The state after a crash past step 3's checkpoint: no step-6 checkpoint, no final model."""
    run_dir = tmp_path / runs[name].name
    shutil.copytree(runs[name], run_dir)
    shutil.rmtree(run_dir / "checkpoints" / f"step-{STEPS}")
    shutil.rmtree(run_dir / "final")
    (run_dir / "summary.json").unlink()
    before = len(events(run_dir))
    result = launch(name, run_dir, "--resume")
    assert result.returncode == 0, result.stdout + result.stderr
    found = events(run_dir)[before:]
    assert of_kind(found, Started)[0].step == SAVE_EVERY
    assert [e.step for e in of_kind(found, TrainLogged)] == list(
        range(SAVE_EVERY + 1, STEPS + 1))
    original = summary(runs[name]).eval["loss"]
    assert summary(run_dir).eval["loss"] == pytest.approx(original, abs=1e-5)


def test_resume_refuses_a_different_plan(runs: dict[str, Path], tmp_path: Path) -> None:
    run_dir = tmp_path / "ddp"
    shutil.copytree(runs["ddp"], run_dir)
    result = launch("zero2", run_dir, "--resume")
    assert result.returncode == 2
    assert "strategy: ddp -> zero2" in result.stderr


@pytest.mark.parametrize("name", LAYOUTS)
def test_each_ranks_peak_memory_is_within_20_percent_of_the_plan(runs: dict[str, Path],
                                                                 name: str) -> None:
    """plan.json's `peak_bytes` vs the high-water mark of each rank's RSS (MiniLM, 2 ranks: the
    runtime is most of it; bench/memory_bench.py measures a 303M model)."""
    strategy, offload = LAYOUTS[name]
    memory = plan(runs[name]).memory
    assert memory is not None
    planned = memory.estimate_for(strategy, offload).peak_bytes
    measured = [report.peak_rss_bytes for report in rank_reports(runs[name])]
    assert planned and all(measured)
    assert max(measured) == pytest.approx(planned, rel=0.2), (measured, planned)


@pytest.mark.parametrize("name", LAYOUTS)
def test_memory_plan_matches_the_bytes_each_rank_holds(runs: dict[str, Path], name: str) -> None:
    """plan.json's per-rank estimate vs sum(numel x element size) measured in the run: 5%."""
    strategy, offload = LAYOUTS[name]
    memory = plan(runs[name]).memory
    assert memory is not None
    estimate = memory.estimate_for(strategy, offload)
    assert estimate.label == name
    for report in rank_reports(runs[name]):
        measured = report.held_bytes
        optimizer = measured.optimizer_state + measured.master_params
        if offload:  # all of it lives in host memory, 1/N per rank
            held = measured.params + measured.grads + optimizer
            assert held == pytest.approx(estimate.host_bytes, rel=0.05)
            continue
        assert measured.params == pytest.approx(estimate.params_bytes, rel=0.05)
        assert measured.grads == pytest.approx(estimate.grads_bytes, rel=0.05)
        assert optimizer == pytest.approx(estimate.optimizer_bytes, rel=0.05)
