"""The quickstart recipe (shortened) through the real CLI, 2 worker processes over gloo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.contract.evaluation import Prediction
from launcher.contract.events import Ended, Evaluated, Started, TrainLogged
from launcher.contract.plan import Plan
from launcher.contract.reports import LabelNames, ReportData
from launcher.contract.run_folder import RunFolder
from tests.conftest import REPO, SFT_LAUNCH, cli_env
from tests.e2e.conftest import QUICKSTART
from tests.helpers.cli_status import Shown
from tests.helpers.png import png_size
from tests.helpers.run_folder import events, of_kind, plan, rank_reports, summary
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
    assert [r.rank for r in reports] == [0, 1]
    assert {r.world_size for r in reports} == {2}
    assert {r.group_size for r in reports} == {2}
    assert {r.process_group_backend for r in reports} == {"gloo"}
    assert {r.strategy for r in reports} == {"ddp"}
    assert {r.gradient_sync for r in reports} == {"shared-memory"}  # both ranks on this host
    fingerprints = {r.final_weights_sha256 for r in reports}
    assert len(fingerprints) == 1, "the ranks ended with different weights: no gradient sync"


def test_training_changed_the_weights(run) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    run_dir, _ = run
    base = AutoModelForSequenceClassification.from_pretrained(plan(run_dir).model_path,
                                                              num_labels=2)
    tuned = AutoModelForSequenceClassification.from_pretrained(run_dir / "final")
    name = "bert.encoder.layer.0.attention.self.query.weight"
    before, after = base.state_dict()[name], tuned.state_dict()[name]
    assert not torch.equal(before, after)


def test_summary(run) -> None:
    run_dir, _ = run
    done = summary(run_dir)
    assert done.status == "completed"
    assert done.steps == STEPS
    assert done.samples == STEPS * 32
    assert done.world_size == 2
    assert done.data.eval_rows == EVAL_ROWS
    assert 0.0 <= done.eval["accuracy"] <= 1.0
    assert done.tokens > done.samples
    assert done.train_samples_per_s > 0


def test_events_drive_progress(run) -> None:
    run_dir, _ = run
    found = events(run_dir)
    kinds = [e.kind for e in found]
    assert set(kinds[:kinds.index(Started.kind)]) <= {"message", "preprocess"}
    assert of_kind(found, Started)[0].total_steps == STEPS
    train_steps = [e.step for e in of_kind(found, TrainLogged)]
    assert train_steps == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    assert [e.step for e in of_kind(found, Evaluated)] == [EVAL_EVERY, STEPS]
    assert isinstance(found[-1], Ended)


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
    losses = {e.step: e.loss for e in of_kind(events(run_dir), TrainLogged)}
    for row in train_rows:
        assert row["train/loss"] == pytest.approx(losses[row["_step"]], rel=1e-9)
    config = read_config(files[0])
    assert config["recipe"]["task"]["kind"] == "sequence_classification"
    assert Plan.from_dict(config["plan"]).world_size == 2


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
    saved = Prediction.read_lines(RunFolder(run_dir).predictions)
    names = LabelNames.read(RunFolder(run_dir).label_names).names
    assert [r.index for r in saved] == list(range(EVAL_ROWS))
    assert [names[i] for i in reloaded] == [r.prediction for r in saved]


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
    assert summary(run_dir).steps == 2
    assert [r.world_size for r in rank_reports(run_dir)] == [2, 2]


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


def test_status_and_logs_of_the_finished_run(run, run_cli) -> None:
    run_dir, _ = run
    shown = run_cli("status", run_dir)
    assert shown.returncode == 0, shown.stderr
    rows = Shown.parse(shown.stdout)
    assert rows.state == "COMPLETED"
    assert rows.backend.startswith("local, process group ")
    assert rows.step.startswith(f"{STEPS}/{STEPS}, loss ")
    assert rows.eval.startswith(f"step {STEPS}: loss ") and "accuracy" in rows.eval
    printed = run_cli("logs", run_dir)
    assert printed.returncode == 0, printed.stderr
    log = (run_dir / "logs" / "launch.log").read_text(errors="replace")
    assert printed.stdout == log
    assert "sft-launch worker: rank 0/2" in log and "sft-launch worker: rank 1/2" in log


def test_report_png_draws_the_run_from_its_numbers(run) -> None:
    """report.png (curves + confusion matrix), drawn from report.json, which holds exactly what
    the event log and the eval predictions say."""
    run_dir, result = run
    folder = RunFolder(run_dir)
    assert png_size(folder.report) == (1500, 700)  # 3 columns: the confusion matrix too
    data = ReportData.read(folder.report_data)
    logged = of_kind(events(run_dir), TrainLogged)
    assert data.train_loss.steps == tuple(e.step for e in logged)
    assert data.train_loss.values == tuple(e.loss for e in logged)
    assert data.lr.values == tuple(e.lr for e in logged)
    assert len(data.tokens_per_s.values) == len(logged) and min(data.tokens_per_s.values) > 0
    evaluated = of_kind(events(run_dir), Evaluated)
    assert data.eval["accuracy"].steps == tuple(e.step for e in evaluated)
    assert data.eval["accuracy"].values == tuple(e.metrics["accuracy"] for e in evaluated)
    assert data.confusion is not None and data.confusion.labels == ("0", "1")
    counts = data.confusion.counts
    assert sum(map(sum, counts)) == EVAL_ROWS
    assert (counts[0][0] + counts[1][1]) / EVAL_ROWS == pytest.approx(summary(run_dir).eval[
        "accuracy"])
    assert f"curves in {folder.report}" in result.stderr
