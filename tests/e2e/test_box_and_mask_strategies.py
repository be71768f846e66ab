"""Object detection and semantic segmentation under every strategy, 2 processes over gloo: a tiny
random-init YOLOS on the raccoon photos and a tiny SegFormer on labelme's VOC masks (no dropout
nor stochastic depth, whose random draws are not what is compared) end with the same weights
under FSDP, ZeRO-2 and ZeRO-3 as under DDP, training moved them, and the sharded strategies hold
about half the parameters on each rank (FSDP shards block by block: within 10%); each rank's
peak memory is within 20% of the plan's."""

from __future__ import annotations

import re
import subprocess
from functools import partial
from pathlib import Path

import pytest

from launcher.contract.plan import Plan
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import Strategy
from tests.conftest import REPO, SFT_LAUNCH, cli_env
from tests.helpers.run_folder import rank_reports
from tests.helpers.tiny_models import build_tiny_segformer, build_tiny_yolos

pytestmark = pytest.mark.slow
STRATEGIES = ("ddp", "fsdp", "zero2", "zero3")
WEIGHT_TOLERANCE = 1e-4
# SegFormer's parameters that only add a per-channel constant in front of its decode head's batch
# norm, which takes it away: their gradient is rounding noise, which AdamW's normalised step turns
# into +-lr whatever its size, so they differ between any two runs; the output does not.
NO_GRADIENT = re.compile(r"decode_head\.linear_projections\.\d+\.proj\.bias|"
                         r"segformer\.stages\.3\.layer_norm\.bias")
TASKS = {  # recipe, model builder, its Auto class, settings
    "detection": ("detect-raccoons.toml", build_tiny_yolos, "AutoModelForObjectDetection",
                  ["train.lr=1e-2", "data.max_eval_samples=4"]),
    "segmentation": ("segment-voc.toml", partial(build_tiny_segformer, random_layers=False),
                     "AutoModelForSemanticSegmentation", ["train.lr=5e-3"]),
}


@pytest.fixture(scope="module", params=list(TASKS))
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[str, dict[str, Path]]:
    recipe, build, _, settings = TASKS[request.param]
    root = tmp_path_factory.mktemp(request.param)
    model = build(root / "model")
    folders = {}
    for strategy in STRATEGIES:
        folders[strategy] = run_dir = root / strategy
        sets = [f"model.path='{model}'", f"distributed.strategy={strategy}",
                "distributed.procs_per_node=2", "train.max_steps=3", "train.warmup_ratio=0",
                "tracking.mode=disabled", *settings]
        result = subprocess.run(
            [*SFT_LAUNCH, REPO / "recipes" / recipe, "--backend", "local", "--run-dir",
             run_dir, "--quiet", *(a for s in sets for a in ("--set", s))],
            cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{strategy}:\n{result.stdout}{result.stderr}"
    folders["start"] = model
    return request.param, folders


def weights(kind: str, folder: Path) -> dict:
    import transformers

    auto = getattr(transformers, TASKS[kind][2])
    return auto.from_pretrained(folder).state_dict()


@pytest.mark.parametrize("strategy", STRATEGIES[1:])
def test_final_weights_agree_with_ddp(runs: tuple[str, dict[str, Path]], strategy: str) -> None:
    kind, folders = runs
    reference, found = weights(kind, folders["ddp"] / "final"), weights(
        kind, folders[strategy] / "final")
    assert found.keys() == reference.keys()
    floats = [k for k in reference if reference[k].is_floating_point()
              and not NO_GRADIENT.fullmatch(k)]
    worst = max((found[k] - reference[k]).abs().max().item() for k in floats)
    assert worst < WEIGHT_TOLERANCE, f"{kind} {strategy}: max |w - w_ddp| = {worst}"
    start = weights(kind, folders["start"])
    moved = max((reference[k] - start[k]).abs().max().item() for k in floats
                if k in start and start[k].shape == reference[k].shape)
    assert moved > 10 * WEIGHT_TOLERANCE, "training barely moved the weights: test is blind"
    if strategy in ("fsdp", "zero3"):  # sharded: each rank holds about half
        total = rank_reports(folders["ddp"])[0].local_param_numel
        for report in rank_reports(folders[strategy]):
            assert report.local_param_numel == pytest.approx(total / 2, rel=0.1)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_ranks_peak_memory_is_within_20_percent_of_the_plan(
        runs: tuple[str, dict[str, Path]], strategy: str) -> None:
    """plan.json's `peak_bytes` (the model and one micro-batch of the largest images the
    processor makes, measured on the fake device by the probe) vs each rank's RSS high-water
    mark (tiny models: the runtime is most of it)."""
    kind, folders = runs
    memory = Plan.read(RunFolder(folders[strategy]).plan).memory
    assert memory is not None and not memory.approximate, kind
    estimate = memory.estimate_for(Strategy(strategy), ())
    assert estimate.activations_bytes > 0
    measured = [report.peak_rss_bytes for report in rank_reports(folders[strategy])]
    assert all(measured)
    assert max(measured) == pytest.approx(estimate.peak_bytes, rel=0.2), (measured, estimate)


@pytest.mark.parametrize("strategy", STRATEGIES[1:])
def test_the_final_eval_pictures_agree_with_ddp(runs: tuple[str, dict[str, Path]],
                                                strategy: str) -> None:
    """report.png's eval pictures (boxes or masks drawn, true beside predicted) under every
    strategy: segmentation predicts them again at the final eval, on every rank where a forward
    is collective (FSDP, ZeRO-3; a hang otherwise), on rank 0 alone elsewhere; the same
    pictures as DDP's but for the few pixels of the weights' rounding."""
    import numpy as np
    from PIL import Image

    from launcher.contract.reports import ReportData

    kind, folders = runs
    kept = {name: ReportData.read(RunFolder(folders[name]).report_data).examples
            for name in ("ddp", strategy)}
    assert kept["ddp"] == kept[strategy] and kept["ddp"], kind
    for name in kept["ddp"]:
        ddp, found = (np.asarray(Image.open(folders[s] / name)) for s in ("ddp", strategy))
        assert ddp.shape == found.shape and (ddp == found).all(-1).mean() > 0.99, (kind, name)
