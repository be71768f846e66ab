"""`sft-launch eval` / `predict` without training, on run folders built by hand: bad input is
one message, exit 2, nothing written; rows to predict need no labels; an NER model predicts
the tags it is scored on; a causal-LM run is scored and answers its prompts."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from launcher.contract.errors import UsageError
from launcher.contract.evaluation import EvalReport, Prediction
from launcher.contract.reports import LabelNames
from launcher.contract.run_folder import RunFolder
from launcher.data.errors import DataError
from launcher.data.formats import load_rows
from tests.conftest import REPO, assert_one_error

QUICKSTART = REPO / "recipes" / "quickstart.toml"
ALPACA = REPO / "recipes" / "alpaca-tiny-llama.toml"


def dry_run(run_cli, recipe: Path, run_dir: Path, *sets: str) -> Path:
    result = run_cli(recipe, "--backend", "local", "--run-dir", run_dir, "--dry-run",
                     "--set", "tracking.mode=disabled", *(f"--set={s}" for s in sets))
    assert result.returncode == 0, result.stderr
    return run_dir


def assert_refused(result, run_dir: Path, *needles: str) -> None:
    assert_one_error(result, *needles)
    left = [p.name for p in run_dir.glob("*") if p.name.startswith(("eval-", "predictions-"))]
    assert not left, f"bad input wrote {left}"


@pytest.fixture
def classifier_run(run_cli, tmp_path: Path) -> Path:
    """A quickstart run folder (--dry-run) made to look finished: label names, final/config.json
    (enough for the checks made before a model is loaded)."""
    run_dir = dry_run(run_cli, QUICKSTART, tmp_path / "run")
    (run_dir / "final").mkdir()
    (run_dir / "final" / "config.json").write_text("{}")
    LabelNames(names=("0", "1")).write(RunFolder(run_dir).label_names)
    return run_dir


def tsv(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(["sentence\tlabel", *lines]) + "\n")
    return path


def test_a_run_without_its_final_model(run_cli, tmp_path: Path) -> None:
    run_dir = dry_run(run_cli, QUICKSTART, tmp_path / "run")
    data = tsv(tmp_path / "new.tsv", "good\t1")
    for command in ("eval", "predict"):
        result = run_cli(command, run_dir, "--data", data)
        assert_refused(result, run_dir, "final/config.json: not found", "sft-launch status")


def test_not_a_run_folder(run_cli, tmp_path: Path) -> None:
    result = run_cli("eval", tmp_path, "--data", tsv(tmp_path / "new.tsv", "good\t1"))
    assert_refused(result, tmp_path, "not a run folder")


@pytest.mark.parametrize(("args", "needle"), [
    (("--format", "bogus"), "--format bogus: not a data format"),
    (("--format", "alpaca"), "a sequence_classification run reads classification"),
    (("--columns", "text"), "--columns text: expected FIELD=COLUMN"),
    (("--columns", "text=missing_column"), 'expected an object with "missing_column"'),
])
def test_bad_options(run_cli, classifier_run: Path, tmp_path: Path, args, needle) -> None:
    data = tsv(tmp_path / "new.tsv", "good\t1")
    assert_refused(run_cli("eval", classifier_run, "--data", data, *args), classifier_run,
                   needle)


def test_a_missing_data_file(run_cli, classifier_run: Path, tmp_path: Path) -> None:
    result = run_cli("predict", classifier_run, "--data", tmp_path / "nope.tsv")
    assert_refused(result, classifier_run, "nope.tsv: file not found")


def test_a_row_that_does_not_parse_names_file_and_line(run_cli, classifier_run: Path,
                                                       tmp_path: Path) -> None:
    data = tsv(tmp_path / "new.tsv", "good\t1", "a sentence without its label")
    for command in ("eval", "predict"):
        result = run_cli(command, classifier_run, "--data", data)
        assert_refused(result, classifier_run, f"{data}:3: expected 2 columns")


def test_an_unknown_label_names_file_and_line(run_cli, classifier_run: Path,
                                              tmp_path: Path) -> None:
    data = tsv(tmp_path / "new.tsv", "good\t1", "bad\t0", "so-so\t2")
    result = run_cli("eval", classifier_run, "--data", data)
    assert_refused(result, classifier_run, f"{data}:4: label '2' is not one of the labels "
                   "['0', '1']")


def test_eval_needs_the_labels(run_cli, classifier_run: Path, tmp_path: Path) -> None:
    data = tmp_path / "new.tsv"
    data.write_text("sentence\ngood\n")
    result = run_cli("eval", classifier_run, "--data", data)
    assert_refused(result, classifier_run, f"{data}:2", '"sentence" and "label"')


def test_a_classification_run_without_its_label_names(run_cli, classifier_run: Path,
                                                      tmp_path: Path) -> None:
    RunFolder(classifier_run).label_names.unlink()
    result = run_cli("eval", classifier_run, "--data", tsv(tmp_path / "new.tsv", "good\t1"))
    assert_refused(result, classifier_run, "label_names.json: not found")


def test_predict_on_a_causal_lm_run_without_a_chat_template(run_cli, tiny_llama_dir: Path,
                                                            tmp_path: Path) -> None:
    """Refused before the model loads (the CLI turns the UsageError into exit 2)."""
    run_dir = dry_run(run_cli, ALPACA, tmp_path / "run", f"model.path='{tiny_llama_dir}'")
    final = run_dir / "final"
    shutil.copytree(tiny_llama_dir, final)
    (final / "chat_template.jinja").unlink()
    config = json.loads((final / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (final / "tokenizer_config.json").write_text(json.dumps(config))
    from launcher.ops.predict import Source, predict_file  # in-process: transformers is loaded

    data = REPO / "tests" / "fixtures" / "data" / "alpaca.json"
    with pytest.raises(UsageError, match="the tokenizer has no chat template") as refused:
        predict_file(run_dir, Source(data), max_new_tokens=3)
    assert refused.value.exit_code == 2
    assert not list(run_dir.glob("predictions-*"))


def test_rows_to_predict_need_no_labels(fixture_data: Path, tmp_path: Path) -> None:
    texts = tmp_path / "texts.tsv"
    texts.write_text("sentence\ngood\nbad\n")
    assert load_rows([texts], "classification", {"text": "sentence"}, labelled=False).rows == [
        {"text": "good", "text_pair": None}, {"text": "bad", "text_pair": None}]
    with pytest.raises(DataError, match=r"texts\.tsv:2"):
        load_rows([texts], "classification", {"text": "sentence"})
    words = tmp_path / "words.jsonl"
    words.write_text('{"tokens": ["Paris", "is", "big"]}\n')
    assert load_rows([words], "tokens", labelled=False).rows == [
        {"tokens": ["Paris", "is", "big"]}]
    conll = fixture_data / "wnut17.conll"
    tagged = load_rows([conll], "conll").rows
    assert load_rows([conll], "conll", labelled=False).rows == [
        {"tokens": row["tokens"]} for row in tagged]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"instruction": "Say hi", "prompt": "Say hi"}\n')
    for fmt in ("alpaca", "prompt_completion"):
        assert load_rows([prompts], fmt, labelled=False).rows == [
            {"messages": [{"role": "user", "content": "Say hi"}]}]
        with pytest.raises(DataError, match=r"prompts\.jsonl:1"):
            load_rows([prompts], fmt)
    answered = load_rows([fixture_data / "alpaca.json"], "alpaca", labelled=False).rows
    assert answered == load_rows([fixture_data / "alpaca.json"], "alpaca").rows


def test_ner_predicts_the_tags_it_is_scored_on(fixture_data: Path) -> None:
    """Rows without tags (predict) get the very tags of eval, words cut by truncation "O"."""
    import torch

    from tests.helpers.ner_task import make_task

    task = make_task("data.max_length=16")
    data = task.encode_data(task.load_tokenizer())
    model = task.load_model(data).eval()
    tagged = load_rows([fixture_data / "wnut17.conll"], "conll",
                       label_map=load_rows(task.recipe.data.train, "conll").label_map).rows[:8]
    untagged = [{"tokens": row["tokens"]} for row in tagged]
    with torch.no_grad():
        scored = task.evaluate(model, task.collate(task.encode(tagged)))
        predicted = task.predict(model, task.collate(task.prompts(untagged)), 0)
    assert predicted == scored.predictions
    assert [len(p) for p in predicted] == [len(row["tokens"]) for row in tagged]
    assert [task.reference(row) for row in tagged] == scored.references
    assert any(s < 0 for e in task.encode(untagged) for s in e["word_starts"])  # words cut


def test_a_causal_lm_run_is_scored_and_answers_its_prompts(run_cli, tiny_llama_dir: Path,
                                                           fixture_data: Path,
                                                           tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from launcher.data.encode.chat import encode_rows
    from launcher.ops.predict import Source, evaluate_file, predict_file

    run_dir = dry_run(run_cli, ALPACA, tmp_path / "run", f"model.path='{tiny_llama_dir}'",
                      "data.max_length=128")
    shutil.copytree(tiny_llama_dir, run_dir / "final")
    data = fixture_data / "alpaca.json"
    report, path = evaluate_file(run_dir, Source(data), max_new_tokens=3)
    assert path == run_dir / "eval-alpaca.json" and EvalReport.read(path) == report
    assert (report.rows, report.task, report.format) == (30, "causal_lm", "alpaca")
    assert report.metrics["perplexity"] == pytest.approx(math.exp(report.metrics["loss"]))
    # The loss is transformers' own, token-weighted over the examples as training encodes them.
    examples, _ = encode_rows(load_rows([data], "alpaca").rows,
                              AutoTokenizer.from_pretrained(run_dir / "final"), 128)
    model = AutoModelForCausalLM.from_pretrained(run_dir / "final").eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for example in examples:
            count = sum(label != -100 for label in example["labels"][1:])
            out = model(input_ids=torch.tensor([example["input_ids"]]),
                        labels=torch.tensor([example["labels"]]))
            total, tokens = total + float(out.loss) * count, tokens + count
    assert report.metrics["loss"] == pytest.approx(total / tokens, rel=1e-5)
    scored = Prediction.read_lines(run_dir / report.predictions)
    outputs = [item["output"] for item in json.loads(data.read_text())]
    assert [p.reference for p in scored] == outputs
    assert [p.index for p in scored] == list(range(30))
    written, rows = predict_file(run_dir, Source(data), max_new_tokens=3)
    assert (written, rows) == (run_dir / "predictions-alpaca.jsonl", 30)
    predicted = Prediction.read_lines(written)
    assert [p.prediction for p in predicted] == [p.prediction for p in scored]
    assert {p.reference for p in predicted} == {None}
