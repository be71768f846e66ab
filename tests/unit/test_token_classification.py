"""Token classification: subword alignment on real WNUT-17 rows, word-level eval, seqeval scores."""

from __future__ import annotations

from itertools import pairwise

import pytest

from launcher.data.splits import load_splits
from launcher.tasks.base import EncodedData
from launcher.tasks.token_classification import IGNORE_INDEX, TokenClassification
from tests.helpers.ner_task import ROWS, make_task


@pytest.fixture(scope="module")
def encoded() -> tuple[TokenClassification, EncodedData]:
    task = make_task()
    return task, task.encode_data(task.load_tokenizer())


def test_first_subword_of_each_word_carries_its_tag(encoded) -> None:
    _, data = encoded
    assert len(data.train) == ROWS
    assert data.label_names[-1] == "O" and "B-person" in data.label_names
    split_words = 0
    for example in data.train:
        labels, starts, tags = example["labels"], example["word_starts"], example["tags"]
        assert len(labels) == len(example["input_ids"])
        assert -1 not in starts  # no truncation at max_length 128 on these tweets
        labelled = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
        assert labelled == starts  # exactly one labelled subword per word, in word order
        assert [labels[s] for s in starts] == tags
        assert labels[0] == labels[-1] == IGNORE_INDEX  # [CLS] and [SEP]
        split_words += sum(b - a > 1 for a, b in pairwise(starts))
    assert split_words > 100, "the rows should hold many words split into several subwords"


def test_words_decode_back_from_their_subwords(encoded) -> None:
    task, data = encoded
    normalize = task.tokenizer.backend_tokenizer.normalizer.normalize_str
    checked = 0
    rows = [row["tokens"] for row in load_splits(task.recipe).train]
    for example, row in zip(data.train, rows, strict=True):
        ids, starts = example["input_ids"], example["word_starts"]
        ends = [*starts[1:], len(ids) - 1]
        for word, start, end in zip(row, starts, ends, strict=True):
            text = task.tokenizer.decode(ids[start:end])
            if "[UNK]" in text:
                continue
            assert text.replace(" ", "") == normalize(word).replace(" ", ""), (word, text)
            checked += 1
    assert checked > 4000


def test_eval_is_word_level_and_counts_truncated_words_as_outside() -> None:
    import torch

    task = make_task("data.max_length=12")
    data = task.encode_data(task.load_tokenizer())
    assert data.stats.truncated > 0
    model = task.load_model(data).eval()
    assert model.config.id2label == dict(enumerate(task.names))
    examples = data.eval[:8]
    with torch.no_grad():
        out = task.evaluate(model, task.collate(examples))
    for example, prediction, reference in zip(examples, out.predictions, out.references,
                                              strict=True):
        assert reference == [task.names[t] for t in example["tags"]]  # every word, even cut ones
        assert len(prediction) == len(reference)
        cut = [i for i, start in enumerate(example["word_starts"]) if start < 0]
        assert all(prediction[i] == "O" for i in cut)
        assert set(prediction) <= set(task.names)
    assert any(-1 in e["word_starts"] for e in examples)
    assert out.count == sum(sum(s >= 0 for s in e["word_starts"]) for e in examples)


def test_metrics_match_a_hand_computed_seqeval_result() -> None:
    task = make_task()
    references = [["B-person", "I-person", "O", "B-location", "O"],
                  ["B-group", "O", "O", "B-person"]]
    predictions = [["B-person", "I-person", "O", "B-location", "O"],
                   ["O", "O", "O", "B-location"]]
    scores = task.metrics(3.0, 4, predictions, references)
    # 4 gold entities, 3 predicted, 2 correct (person 0-1, location 3 of sentence 1).
    assert scores["loss"] == pytest.approx(0.75)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 4)
    assert scores["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert scores["accuracy"] == pytest.approx(7 / 9)
    assert scores["per_entity"] == {
        "group": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
        "location": {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1},
        "person": {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2},
    }


def test_metrics_follow_conlleval_an_entity_may_start_with_i() -> None:
    scores = make_task().metrics(0.0, 1, [["O", "I-product", "I-product"]],
                                 [["O", "B-product", "I-product"]])
    assert scores["f1"] == 1.0


def test_metrics_without_eval_rows_report_the_loss_only() -> None:
    assert make_task().metrics(2.0, 4, [], []) == {"loss": 0.5}
