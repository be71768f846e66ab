"""The WNUT-17 NER recipe (shortened) through the real CLI, 2 worker processes over gloo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.contract.evaluation import Prediction
from launcher.contract.events import Evaluated
from launcher.contract.run_folder import RunFolder
from tests.conftest import REPO, SFT_LAUNCH, cli_env
from tests.helpers.run_folder import events, of_kind, plan, rank_reports, summary
from tests.helpers.wandb_file import find_run_files, read_history

pytestmark = pytest.mark.slow
NER = REPO / "recipes" / "ner-wnut17.toml"
DEV = REPO / "recipes" / "data" / "wnut17" / "emerging.dev.conll"
TRAIN = REPO / "recipes" / "data" / "wnut17" / "wnut17train.conll"
TYPES = {"corporation", "creative-work", "group", "location", "person", "product"}
STEPS, EVAL_ROWS = 6, 64


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    run_dir = tmp_path_factory.mktemp("ner") / "run"
    result = subprocess.run(
        [*SFT_LAUNCH, NER, "--backend", "local", "--run-dir", run_dir, "--quiet",
         "--set", "data.max_train_samples=256", "--set", f"train.max_steps={STEPS}",
         "--set", f"data.max_eval_samples={EVAL_ROWS}", "--set", "tracking.mode=offline"],
        cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return run_dir, result


def gold_entities(rows: int) -> int:
    """Entities (seqeval, conlleval rules) in the first `rows` dev sentences."""
    from seqeval.metrics.sequence_labeling import get_entities

    from launcher.data.formats import load_rows

    loaded = load_rows([DEV], "conll", label_map=load_rows([TRAIN], "conll").label_map)
    names = loaded.label_map.names
    return sum(len(get_entities([names[t] for t in row["tags"]])) for row in loaded.rows[:rows])


def test_summary_holds_entity_scores_and_the_per_entity_table(run) -> None:
    run_dir, result = run
    done = summary(run_dir)
    assert done.steps == STEPS and done.world_size == 2
    assert done.data.eval_rows == EVAL_ROWS
    for name in ("precision", "recall", "f1", "accuracy", "loss"):
        assert isinstance(done.eval[name], float), name
    assert 0.0 <= done.eval["f1"] <= 1.0
    assert done.eval["accuracy"] > 0.5  # most words are "O"
    table = done.eval_tables["per_entity"]
    assert set(table) <= TYPES and "person" in table
    for row in table.values():
        assert set(row) == {"precision", "recall", "f1", "support"}
    # Every gold entity of the eval rows is scored: none lost to subwords or to the 2 ranks.
    assert sum(row["support"] for row in table.values()) == gold_entities(EVAL_ROWS)
    assert "eval f1" in result.stderr  # the final metrics table's "eval f1" row


def test_eval_events_stay_scalar_for_the_progress_display(run) -> None:
    run_dir, _ = run
    evals = of_kind(events(run_dir), Evaluated)
    assert [e.step for e in evals] == [STEPS]
    assert all(isinstance(v, float) for v in evals[0].metrics.values())
    assert "f1" in evals[0].metrics


def test_wandb_gets_the_per_entity_table_as_scalars(run) -> None:
    run_dir, _ = run
    done = summary(run_dir)
    files = find_run_files(run_dir / "wandb")
    assert len(files) == 1
    rows = [row for row in read_history(files[0]) if "eval/f1" in row]
    assert [row["_step"] for row in rows] == [STEPS]
    for kind, scores in done.eval_tables["per_entity"].items():
        for name, value in scores.items():
            assert rows[0][f"eval/per_entity/{kind}/{name}"] == pytest.approx(value)
    assert not any(isinstance(value, dict) for value in rows[0].values())


def test_ranks_end_with_identical_weights(run) -> None:
    run_dir, _ = run
    assert len({r.final_weights_sha256 for r in rank_reports(run_dir)}) == 1


def test_final_model_reloads_with_its_labels_and_predicts_the_saved_tags(run) -> None:
    run_dir, _ = run
    final = run_dir / "final"
    script = f"""
import json, torch
from transformers import AutoModelForTokenClassification, AutoTokenizer
from launcher.data.formats import load_rows
rows = load_rows([{str(DEV)!r}], "conll").rows[:{EVAL_ROWS}]
tok = AutoTokenizer.from_pretrained({str(final)!r})
model = AutoModelForTokenClassification.from_pretrained({str(final)!r}).eval()
enc = tok([row["tokens"] for row in rows], is_split_into_words=True, truncation=True,
          max_length=128, padding=True, return_tensors="pt")
with torch.no_grad():
    predicted = model(**enc).logits.argmax(-1).tolist()
out = []
for i in range(len(rows)):
    words, seen = [], set()
    for position, word in enumerate(enc.word_ids(i)):
        if word is not None and word not in seen:
            seen.add(word)
            words.append(model.config.id2label[predicted[i][position]])
    out.append(words)
print(json.dumps({{"id2label": model.config.id2label, "predictions": out}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=cli_env(), cwd=REPO)
    assert done.returncode == 0, done.stderr
    reloaded = json.loads(done.stdout.strip().splitlines()[-1])
    names = [*sorted([f"{p}-{t}" for t in TYPES for p in "BI"]), "O"]
    assert reloaded["id2label"] == {str(i): name for i, name in enumerate(names)}
    saved = Prediction.read_lines(RunFolder(run_dir).predictions)
    assert [r.index for r in saved] == list(range(EVAL_ROWS))
    # One tag per word, as the worker scored them (after 6 steps most tags are still "O").
    assert reloaded["predictions"] == [r.prediction for r in saved]


def test_training_changed_the_encoder(run) -> None:
    from safetensors import safe_open

    run_dir, _ = run
    name = "encoder.layer.0.attention.self.query.weight"
    base = Path(plan(run_dir).model_path) / "model.safetensors"
    with safe_open(base, "pt") as before, safe_open(run_dir / "final/model.safetensors",
                                                    "pt") as after:
        assert not before.get_tensor(name).equal(after.get_tensor(f"bert.{name}"))
