"""`sft-launch eval` and `predict` on short real runs (quickstart, WNUT-17 NER), through the CLI,
checked against plain transformers + scikit-learn / seqeval on the same rows."""

from __future__ import annotations

import csv
import re
import subprocess
from pathlib import Path

import pytest

from launcher.contract.evaluation import EvalReport, Prediction
from launcher.contract.run_folder import RunFolder
from tests.conftest import REPO, SFT_LAUNCH, cli_env
from tests.e2e.conftest import QUICKSTART

pytestmark = pytest.mark.slow
NER = REPO / "recipes" / "ner-wnut17.toml"
SST2_DEV = REPO / "recipes" / "data" / "sst2" / "dev.tsv"
WNUT = REPO / "tests" / "fixtures" / "data" / "wnut17.conll"
EVAL_ROWS, HELD_OUT = 32, 40
MAX_LENGTH, MICRO = 64, 16  # the quickstart's data.max_length, and its micro batch (32 / 2)


def train(recipe: Path, run_dir: Path, *sets: str) -> Path:
    result = subprocess.run(
        [*SFT_LAUNCH, recipe, "--backend", "local", "--run-dir", run_dir, "--quiet",
         "--set", "tracking.mode=disabled", *(f"--set={s}" for s in sets)],
        cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return run_dir


def sft_launch(*args: object) -> subprocess.CompletedProcess:
    result = subprocess.run([*SFT_LAUNCH, *map(str, args)], cwd=REPO, env=cli_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def printed(output: str, metric: str) -> str:
    """A metric's value in the printed table."""
    found = re.search(rf"│ {metric}\s*│\s*([\d.]+) │", output)
    assert found, output
    return found.group(1)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 steps at a learning rate so low that the new head still splits the rows between the
    labels (at the recipe's, the first dozens of steps give every row one label, and a
    comparison of constant predictions would be blind)."""
    return train(QUICKSTART, tmp_path_factory.mktemp("quick") / "run",
                 "data.max_train_samples=128", f"data.max_eval_samples={EVAL_ROWS}",
                 "train.max_steps=4", "train.lr=1e-6")


def test_eval_on_rows_it_never_saw_equals_transformers_and_scikit_learn(
        quickstart: Path, tmp_path: Path) -> None:
    import torch
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    lines = SST2_DEV.read_text().splitlines()
    assert len(lines) - 1 >= EVAL_ROWS + HELD_OUT
    data = tmp_path / "sst2-held-out.tsv"  # the dev rows after those the run evaluated on
    data.write_text("\n".join([lines[0], *lines[-HELD_OUT:]]) + "\n")
    result = sft_launch("eval", quickstart, "--data", data)

    rows = list(csv.DictReader(data.open(), delimiter="\t", quoting=csv.QUOTE_NONE))
    final = quickstart / "final"
    tokenizer = AutoTokenizer.from_pretrained(final)
    model = AutoModelForSequenceClassification.from_pretrained(final).eval()
    predicted = []
    with torch.no_grad():
        for start in range(0, len(rows), MICRO):
            chunk = [row["sentence"] for row in rows[start:start + MICRO]]
            encoded = tokenizer(chunk, truncation=True, max_length=MAX_LENGTH, padding=True,
                                return_tensors="pt")
            predicted += model(**encoded).logits.argmax(-1).tolist()
    gold = [int(row["label"]) for row in rows]
    assert len(set(predicted)) == 2, "constant predictions: the comparison would be blind"
    accuracy = float(accuracy_score(gold, predicted))
    macro_f1 = float(f1_score(gold, predicted, average="macro"))

    folder = RunFolder(quickstart)
    report = EvalReport.read(folder.eval_report("sst2-held-out"))
    assert (report.rows, report.data, report.task) == (HELD_OUT, str(data.resolve()),
                                                       "sequence_classification")
    assert report.metrics["accuracy"] == accuracy
    assert report.metrics["macro_f1"] == macro_f1
    assert printed(result.stderr, "accuracy") == f"{accuracy:.4f}"
    assert printed(result.stderr, "macro_f1") == f"{macro_f1:.4f}"
    assert str(folder.eval_report("sst2-held-out")) in result.stderr
    saved = Prediction.read_lines(folder.predictions_on("sst2-held-out"))
    assert [p.index for p in saved] == list(range(HELD_OUT))
    assert [p.prediction for p in saved] == [str(label) for label in predicted]
    assert [p.reference for p in saved] == [row["label"] for row in rows]

    unlabelled = tmp_path / "sst2-texts.tsv"  # the same rows, without their label column
    unlabelled.write_text("\n".join(line.split("\t")[0] for line in data.read_text()
                                    .splitlines()) + "\n")
    shown = sft_launch("predict", quickstart, "--data", unlabelled)
    assert f"{HELD_OUT} predictions" in shown.stderr
    alone = Prediction.read_lines(folder.predictions_on("sst2-texts"))
    assert [(p.index, p.prediction, p.reference) for p in alone] == [
        (p.index, p.prediction, None) for p in saved]


def read_conll(path: Path) -> tuple[list[list[str]], list[list[str]]]:
    """Words and gold tags per sentence (sentences end at blank or whitespace-only lines)."""
    words, tags, sentence = [], [], []
    for line in [*path.read_text().splitlines(), ""]:
        if line.strip():
            sentence.append(line.split("\t"))
        elif sentence:
            words.append([word for word, _ in sentence])
            tags.append([tag for _, tag in sentence])
            sentence = []
    return words, tags


def test_ner_eval_scores_its_predictions_as_seqeval_does(tmp_path_factory) -> None:
    """Trained (20 small steps) on the very sentences it is then scored on: in so few steps
    an encoder tags entities only in sentences it has seen (elsewhere every word is "O", and
    F1 would be a blind 0 == 0)."""
    from seqeval.metrics import accuracy_score, classification_report, f1_score

    run_dir = train(NER, tmp_path_factory.mktemp("ner") / "run", f"data.train='{WNUT}'",
                    f"data.eval='{WNUT}'", "data.max_eval_samples=8", "train.max_steps=20",
                    "train.lr=1e-3", "train.warmup_ratio=0")
    result = sft_launch("eval", run_dir, "--data", WNUT)
    folder = RunFolder(run_dir)
    report = EvalReport.read(folder.eval_report("wnut17"))
    words, gold = read_conll(WNUT)
    assert report.rows == len(gold) == 40
    saved = Prediction.read_lines(folder.predictions_on("wnut17"))
    predicted = [p.prediction for p in saved]
    assert [p.reference for p in saved] == gold
    assert [len(tags) for tags in predicted] == [len(sentence) for sentence in words]
    assert any(tag != "O" for tags in predicted for tag in tags), "no entity predicted"
    assert report.metrics["f1"] == float(f1_score(gold, predicted))
    assert report.metrics["accuracy"] == float(accuracy_score(gold, predicted))
    assert printed(result.stderr, "f1") == f"{report.metrics['f1']:.4f}"
    expected = classification_report(gold, predicted, output_dict=True, zero_division=0)
    table = report.tables["per_entity"]
    assert {kind: row["support"] for kind, row in table.items()} == {
        kind: row["support"] for kind, row in expected.items() if not kind.endswith(" avg")}
    assert "per entity" in result.stderr
