"""Image classification under every strategy, 2 processes: a tiny random-init EfficientNet
(convolution stages, batch norm) ends with the same weights under FSDP (its blocks sharded one by
one), ZeRO-2 and ZeRO-3 as under DDP, and the shards are real."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from launcher.contract.plan import Plan
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import Strategy
from tests.conftest import REPO, SFT_LAUNCH, cli_env
from tests.helpers.image_folders import HYMENOPTERA, copy_images
from tests.helpers.run_folder import rank_reports, summary
from tests.helpers.tiny_models import build_tiny_efficientnet

pytestmark = pytest.mark.slow
STRATEGIES = ("ddp", "fsdp", "zero2", "zero3")
STEPS, WEIGHT_TOLERANCE = 4, 1e-4


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("image-strategies")
    model = build_tiny_efficientnet(root / "model")
    train = copy_images(HYMENOPTERA, root / "train", 0, 16)
    folders = {}
    for strategy in STRATEGIES:
        folders[strategy] = run_dir = root / strategy
        result = subprocess.run(
            [*SFT_LAUNCH, REPO / "recipes" / "image-ants-bees.toml", "--backend", "local",
             "--run-dir", run_dir, "--quiet", "--set", f"model.path='{model}'",
             "--set", f"data.train=['{train}']", "--set", "data.eval_fraction=0.25",
             "--set", f"distributed.strategy={strategy}", "--set", f"train.max_steps={STEPS}",
             "--set", "train.global_batch_size=8", "--set", "train.lr=1e-3",
             "--set", "tracking.mode=disabled"],
            cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{strategy}:\n{result.stdout}{result.stderr}"
    return folders


def weights(folder: Path) -> dict:
    from transformers import AutoModelForImageClassification

    return AutoModelForImageClassification.from_pretrained(folder).state_dict()


def trained(run_dir: Path) -> list[str]:
    """The names of the parameters (not the batch-norm statistics, which move without
    training)."""
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(run_dir / "final")
    return [name for name, _ in model.named_parameters()]


@pytest.mark.parametrize("strategy", STRATEGIES[1:])
def test_final_weights_agree_with_ddp(runs: dict[str, Path], strategy: str) -> None:
    reference, found = weights(runs["ddp"] / "final"), weights(runs[strategy] / "final")
    assert found.keys() == reference.keys()
    floats = [k for k in reference if reference[k].is_floating_point()]
    worst = max((found[k] - reference[k]).abs().max().item() for k in floats)
    assert worst < WEIGHT_TOLERANCE, f"{strategy}: max |w - w_ddp| = {worst}"
    start = weights(runs["ddp"] / ".." / "model")
    moved = max((reference[k] - start[k]).abs().max().item() for k in trained(runs["ddp"])
                if start[k].shape == reference[k].shape)
    assert moved > 10 * WEIGHT_TOLERANCE, "training barely moved the weights: test is blind"
    assert summary(runs[strategy]).eval["loss"] == pytest.approx(
        summary(runs["ddp"]).eval["loss"], abs=1e-3)


def test_sharded_strategies_hold_half_the_parameters(runs: dict[str, Path]) -> None:
    total = rank_reports(runs["ddp"])[0].local_param_numel
    for strategy in ("fsdp", "zero3"):
        for report in rank_reports(runs[strategy]):
            assert report.local_param_numel == pytest.approx(total / 2, rel=0.05), strategy
            assert report.strategy == strategy


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_ranks_peak_memory_is_within_20_percent_of_the_plan(runs: dict[str, Path],
                                                                 strategy: str) -> None:
    """plan.json's `peak_bytes` (the image model measured on the fake device by the probe) vs
    the high-water mark of each rank's RSS; `bench/memory_bench.py --task image` measures
    EfficientNet-Lite0 at 224 pixels, where activations are most of it."""
    memory = Plan.read(RunFolder(runs[strategy]).plan).memory
    assert memory is not None and not memory.approximate
    planned = memory.estimate_for(Strategy(strategy), ()).peak_bytes
    measured = [report.peak_rss_bytes for report in rank_reports(runs[strategy])]
    assert planned and all(measured)
    assert max(measured) == pytest.approx(planned, rel=0.2), (measured, planned)
