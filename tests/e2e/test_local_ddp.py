"""The quickstart recipe (shortened) through the real CLI, 2 worker processes over gloo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, SFT_LAUNCH, cli_env
from tests.e2e.conftest import QUICKSTART, rank_reports, read_events, read_json
from tests.helpers.wandb_file import find_run_files, read_config, read_history

pytestmark = pytest.mark.slow
SECRET = "sk-test-0123456789-must-never-be-written"
STEPS, LOG_EVERY, EVAL_EVERY, EVAL_ROWS = 12, 2, 6, 96


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    run_dir = tmp_path_factory.mktemp("quick") / "run"
    result = subprocess.run(
        [*SFT_LAUNCH, QUICKSTART, "--backend", "local", "--run-dir", run_dir, "--quiet",
         "--set", f"data.max_train_samples={STEPS * 32}",
         "--set", f"data.max_eval_samples={EVAL_ROWS}",
         "--set", f"train.log_every={LOG_EVERY}", "--set", f"train.eval_every={EVAL_EVERY}",
         "--set", "tracking.mode=offline"],
        cwd=REPO, env=cli_env(WANDB_API_KEY=SECRET), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return run_dir, result


def test_run_folder_layout(run) -> None:
    run_dir, result = run
    for name in ("recipe.toml", "plan.json", "accelerate.yaml", "launch.sh", "summary.json",
                 "final/config.json", "final/model.safetensors", "final/tokenizer.json"):
        assert (run_dir / name).is_file(), name
    assert str(run_dir) in result.stderr.splitlines()[0]  # the folder is printed first
    assert "final metrics" in result.stderr  # the summary table


def test_two_processes_form_one_group_and_end_with_identical_weights(run) -> None:
    run_dir, _ = run
    reports = rank_reports(run_dir)
    assert [r["rank"] for r in reports] == [0, 1]
    assert {r["world_size"] for r in reports} == {2}
    assert {r["group_size"] for r in reports} == {2}
    assert {r["backend"] for r in reports} == {"gloo"}
    assert {r["strategy"] for r in reports} == {"ddp"}
    fingerprints = {r["final_weights_sha256"] for r in reports}
    assert len(fingerprints) == 1, "the ranks ended with different weights: no gradient sync"


def test_training_changed_the_weights(run) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    run_dir, _ = run
    plan = read_json(run_dir / "plan.json")
    base = AutoModelForSequenceClassification.from_pretrained(plan["model_path"], num_labels=2)
    tuned = AutoModelForSequenceClassification.from_pretrained(run_dir / "final")
    name = "bert.encoder.layer.0.attention.self.query.weight"
    before, after = base.state_dict()[name], tuned.state_dict()[name]
    assert not torch.equal(before, after)


def test_summary(run) -> None:
    run_dir, _ = run
    summary = read_json(run_dir / "summary.json")
    assert summary["status"] == "completed"
    assert summary["steps"] == STEPS
    assert summary["samples"] == STEPS * 32
    assert summary["world_size"] == 2
    assert summary["eval_rows"] == EVAL_ROWS
    assert 0.0 <= summary["eval_accuracy"] <= 1.0
    assert summary["tokens"] > summary["samples"]
    assert summary["train_samples_per_s"] > 0


def test_events_drive_progress(run) -> None:
    run_dir, _ = run
    events = read_events(run_dir)
    kinds = [e["event"] for e in events]
    assert set(kinds[:kinds.index("start")]) <= {"message", "preprocess"}
    assert events[kinds.index("start")]["total_steps"] == STEPS
    train_steps = [e["step"] for e in events if e["event"] == "train"]
    assert train_steps == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    assert [e["step"] for e in events if e["event"] == "eval"] == [EVAL_EVERY, STEPS]
    assert events[-1]["event"] == "end"


def test_wandb_offline_run_holds_train_and_eval_metrics(run) -> None:
    run_dir, _ = run
    files = find_run_files(run_dir / "wandb")
    assert len(files) == 1, "exactly one W&B run, from rank 0"
    history = read_history(files[0])
    train_rows = [row for row in history if "train/loss" in row]
    assert [row["_step"] for row in train_rows] == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    for key in ("train/lr", "train/grad_norm", "train/epoch", "train/tokens_per_s",
                "train/samples_per_s"):
        assert all(key in row for row in train_rows), key
    eval_rows = [row for row in history if "eval/accuracy" in row]
    assert [row["_step"] for row in eval_rows] == [EVAL_EVERY, STEPS]
    events = {e["step"]: e["loss"] for e in read_events(run_dir) if e["event"] == "train"}
    for row in train_rows:
        assert row["train/loss"] == pytest.approx(events[row["_step"]], rel=1e-9)
    config = read_config(files[0])
    assert config["recipe"]["task"]["kind"] == "sequence_classification"
    assert config["plan"]["world_size"] == 2


def test_api_key_never_written(run) -> None:
    run_dir, result = run
    assert SECRET not in result.stdout + result.stderr
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"secret found in {path}"
    assert not (REPO / ".deepspeed_env").exists()


def test_final_model_reloads_and_gives_the_same_predictions(run) -> None:
    run_dir, _ = run
    script = f"""
import json, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from launcher.data.formats import load_rows
rows = load_rows([{str(REPO / 'recipes/data/sst2/dev.tsv')!r}], "classification",
                 {{"text": "sentence"}}).rows[:{EVAL_ROWS}]
tok = AutoTokenizer.from_pretrained({str(run_dir / 'final')!r})
model = AutoModelForSequenceClassification.from_pretrained({str(run_dir / 'final')!r}).eval()
with torch.no_grad():
    enc = tok([r["text"] for r in rows], truncation=True, max_length=64, padding=True,
              return_tensors="pt")
    print(json.dumps(model(**enc).logits.argmax(-1).tolist()))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=cli_env(), check=True, cwd=REPO)
    reloaded = json.loads(out.stdout.strip().splitlines()[-1])
    lines = (run_dir / "eval_predictions.jsonl").read_text().splitlines()
    saved = [json.loads(line) for line in lines]
    assert [r["index"] for r in saved] == list(range(EVAL_ROWS))
    assert reloaded == [r["prediction"] for r in saved]


def test_dry_run_folder_launches_by_hand_with_accelerate(run_cli, tmp_path: Path) -> None:
    """A person can rerun a run folder with plain `accelerate launch --config_file`."""
    run_dir = tmp_path / "by-hand"
    result = run_cli(QUICKSTART, "--backend", "local", "--run-dir", run_dir, "--dry-run",
                     "--set", "train.max_steps=2", "--set", "data.max_train_samples=64",
                     "--set", "data.max_eval_samples=16", "--set", "tracking.mode=disabled")
    assert result.returncode == 0, result.stderr
    assert not (run_dir / "summary.json").exists()
    accelerate = Path(sys.executable).parent / "accelerate"
    env = cli_env()
    env.pop("ACCELERATE_USE_CPU", None)
    done = subprocess.run([accelerate, "launch", "--config_file", "accelerate.yaml",
                           "-m", "launcher.worker", "."], cwd=run_dir, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert read_json(run_dir / "summary.json")["steps"] == 2
    assert [r["world_size"] for r in rank_reports(run_dir)] == [2, 2]


def test_worker_refuses_a_process_group_that_differs_from_the_plan(run_cli,
                                                                   tmp_path: Path) -> None:
    """One process started by hand for a 2-process plan: a loud refusal, no training."""
    run_dir = tmp_path / "wrong-world"
    result = run_cli(QUICKSTART, "--backend", "local", "--run-dir", run_dir, "--dry-run",
                     "--set", "tracking.mode=disabled")
    assert result.returncode == 0, result.stderr
    done = subprocess.run([sys.executable, "-m", "launcher.worker", str(run_dir)], env=cli_env(),
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "world size is 1 (WORLD_SIZE from the launcher), the plan says 2" in done.stderr
    assert "Refusing to train" in done.stderr
    assert not (run_dir / "summary.json").exists()
    assert not (run_dir / "logs" / "rank-0.json").exists()
