"""Normalising every format to its canonical rows, on real rows; label maps; bad rows; mixing."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from launcher.data.errors import DataError
from launcher.data.formats import FORMATS, load_rows
from launcher.data.labels import LabelMap
from launcher.data.mixing import mix, split_rows


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_every_format_has_a_reader_and_the_recipe_takes_it() -> None:
    from typing import get_args

    from launcher.data.formats import _NORMALISERS, GROUPED
    from launcher.recipe.schema import DataFormat

    assert len(FORMATS) >= 8 and set(_NORMALISERS) | set(GROUPED) == set(FORMATS)
    assert get_args(DataFormat) == FORMATS


def test_alpaca_rows_become_conversations(fixture_data: Path) -> None:
    raw = json.loads((fixture_data / "alpaca.json").read_text(encoding="utf-8"))
    loaded = load_rows([fixture_data / "alpaca.json"], "alpaca")
    assert len(loaded.rows) == 30 and loaded.skipped == [] and loaded.label_map is None
    for source, row in zip(raw, loaded.rows, strict=True):
        user, assistant = row["messages"]
        expected = f"{source['instruction']}\n\n{source['input']}" if source["input"] else None
        assert user == {"role": "user", "content": expected or source["instruction"]}
        assert assistant == {"role": "assistant", "content": source["output"]}


def test_alpaca_system_and_renamed_columns(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"prompt_text": "Hi", "output": "Yo", "system": "S"}])
    rows = load_rows([path], "alpaca", {"instruction": "prompt_text"}).rows
    assert rows[0]["messages"] == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Yo"},
    ]


def test_messages_with_typed_content_parts(fixture_data: Path) -> None:
    lines = (fixture_data / "messages.jsonl").read_text(encoding="utf-8").splitlines()
    rows = load_rows([fixture_data / "messages.jsonl"], "messages").rows
    assert len(rows) == 30
    for line, row in zip(lines, rows, strict=True):
        source = json.loads(line)["messages"]
        expected = [
            {"role": m["role"], "content": "".join(p["value"] for p in m["content"])}
            for m in source
        ]
        assert row["messages"] == expected


def test_messages_content_shapes(tmp_path: Path) -> None:
    conversation = [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"text": "b"}]},
        {"role": "assistant", "content": "c"},
    ]
    rows = load_rows([write_jsonl(tmp_path / "m.jsonl", [{"messages": conversation}])], "messages")
    assert [m["content"] for m in rows.rows[0]["messages"]] == ["a\nb", "c"]


def test_sharegpt_roles(tmp_path: Path) -> None:
    row = {
        "system": "be brief",
        "conversations": [
            {"from": "human", "value": "q"},
            {"from": "function_call", "value": '{"name": "answer", "arguments": {}}'},
            {"from": "observation", "value": "42"},
            {"from": "gpt", "value": "a"},
        ],
    }
    rows = load_rows([write_jsonl(tmp_path / "s.jsonl", [row])], "sharegpt").rows
    roles = [m["role"] for m in rows[0]["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]


def test_gsm8k_as_prompt_completion_with_column_mapping(fixture_data: Path) -> None:
    columns = {"prompt": "question", "completion": "answer"}
    rows = load_rows([fixture_data / "gsm8k.jsonl"], "prompt_completion", columns).rows
    assert len(rows) == 24
    user, assistant = rows[0]["messages"]
    assert user["role"] == "user" and user["content"].startswith("Natalia sold clips")
    assert assistant["role"] == "assistant" and assistant["content"].endswith("#### 72")


def test_wikisql_text(fixture_data: Path) -> None:
    rows = load_rows([fixture_data / "wikisql.jsonl"], "text").rows
    assert len(rows) == 24
    assert rows[0]["text"].startswith("table: 1-1000181-1\ncolumns:")


def test_sst2_classification_with_train_label_map_reused_for_dev(fixture_data: Path) -> None:
    columns = {"text": "sentence"}
    train = load_rows([fixture_data / "sst2_train.tsv"], "classification", columns)
    assert train.label_map == LabelMap(("0", "1"))
    assert train.label_map.id2label == {0: "0", 1: "1"}
    assert train.rows[0] == {
        "text": "hide new secretions from the parental units ",
        "text_pair": None,
        "label": 0,
    }
    assert Counter(row["label"] for row in train.rows).keys() == {0, 1}
    dev = load_rows(
        [fixture_data / "sst2_dev.tsv"], "classification", columns, "error", train.label_map
    )
    assert len(dev.rows) == 20 and dev.label_map is train.label_map


def test_label_names_are_sorted_and_unknown_eval_labels_are_bad_rows(tmp_path: Path) -> None:
    train = write_jsonl(
        tmp_path / "t.jsonl", [{"text": "x", "label": "pos"}, {"text": "y", "label": "neg"}]
    )
    loaded = load_rows([train], "classification")
    assert loaded.label_map.names == ("neg", "pos")
    assert [row["label"] for row in loaded.rows] == [1, 0]
    evaluation = write_jsonl(tmp_path / "e.jsonl", [{"text": "z", "label": "meh"}])
    with pytest.raises(DataError, match=r"e.jsonl:1: label 'meh' is not one of the labels"):
        load_rows([evaluation], "classification", label_map=loaded.label_map)
    skipped = load_rows(
        [evaluation], "classification", on_bad_row="skip", label_map=loaded.label_map
    )
    assert skipped.rows == [] and len(skipped.skipped) == 1


def test_wnut17_conll_tags_become_ids(fixture_data: Path) -> None:
    loaded = load_rows([fixture_data / "wnut17.conll"], "conll")
    assert len(loaded.rows) == 40
    names = loaded.label_map.names
    assert names[-1] == "O" and "B-location" in names
    first = loaded.rows[0]
    assert first["tokens"][:3] == ["going", "to", "tucson"]
    assert [names[tag] for tag in first["tags"][:3]] == ["O", "O", "B-location"]


def test_tokens_format_with_renamed_int_tags(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"tokens": ["a", "b"], "ner_tags": [0, 2]}])
    loaded = load_rows([path], "tokens", {"tags": "ner_tags"})
    assert loaded.rows == [{"tokens": ["a", "b"], "tags": [0, 2]}]
    assert loaded.label_map.names == ("0", "1", "2")


@pytest.mark.parametrize(
    ("fmt", "row", "reason"),
    [
        ("alpaca", {"instruction": "i"}, 'expected an object with "instruction" and "output", got'),
        ("alpaca", {"instruction": "i", "output": 3}, '"output" must be a string, got 3'),
        ("messages", {"messages": [{"role": "user", "content": "q"}]}, "no assistant turn"),
        ("messages", {"messages": [{"role": "bot", "content": "q"}]}, "message 0 must be"),
        (
            "messages",
            {"messages": [{"role": "assistant", "content": [{"type": "image", "url": "u"}]}]},
            "content parts must be text parts",
        ),
        ("messages", {"messages": "hi"}, '"messages" must be a non-empty list'),
        ("sharegpt", {"conversations": [{"from": "robot", "value": "x"}]}, "turn 0 must be"),
        ("text", {"text": "  "}, '"text" is empty'),
        ("classification", {"text": "x", "label": True}, '"label" must be a string or an integer'),
        ("tokens", {"tokens": ["a"], "tags": ["O", "O"]}, "1 tokens but 2 tags"),
    ],
)
def test_bad_rows_name_file_line_and_reason(
    tmp_path: Path, fmt: str, row: dict[str, Any], reason: str
) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(DataError) as caught:
        load_rows([path], fmt)
    assert (caught.value.path, caught.value.line) == (str(path), 1)
    assert reason in str(caught.value)
    assert str(caught.value).startswith(f"{path}:1: ")


def test_skip_mode_counts_bad_rows_across_files(fixture_data: Path, tmp_path: Path) -> None:
    bad = write_jsonl(
        tmp_path / "bad.jsonl", [{"instruction": "i"}, {"instruction": "i", "output": "o"}]
    )
    bad.write_text(bad.read_text() + "{broken\n", encoding="utf-8")
    loaded = load_rows([fixture_data / "alpaca.json", bad], "alpaca", on_bad_row="skip")
    assert len(loaded.rows) == 31
    assert sorted((e.path, e.line) for e in loaded.skipped) == [(str(bad), 1), (str(bad), 3)]


def test_config_errors(fixture_data: Path) -> None:
    with pytest.raises(ValueError, match="unknown data format"):
        load_rows([fixture_data / "alpaca.json"], "chatml")
    with pytest.raises(ValueError, match=r"columns \['question'\] are not fields"):
        load_rows([fixture_data / "alpaca.json"], "alpaca", {"question": "q"})


def test_split_rows_is_seeded_and_keeps_order() -> None:
    rows = list(range(100))
    train, evaluation = split_rows(rows, 0.1, seed=3)
    assert len(evaluation) == 10 and sorted(train + evaluation) == rows
    assert evaluation == sorted(evaluation)
    assert split_rows(rows, 0.1, seed=3) == (train, evaluation)
    assert split_rows(rows, 0.1, seed=4)[1] != evaluation
    with pytest.raises(ValueError):
        split_rows(rows, 1.0, seed=0)


def test_mix_weights_are_sampling_proportions() -> None:
    small = [f"a{i}" for i in range(10)]
    large = [f"b{i}" for i in range(100)]
    mixed = mix([(small, 3.0), (large, 1.0)], seed=0, total=40)
    counts = Counter(row[0] for row in mixed)
    assert counts == {"a": 30, "b": 10}
    assert Counter(row for row in mixed if row[0] == "a") == dict.fromkeys(small, 3)
    assert len(set(row for row in mixed if row[0] == "b")) == 10
    assert mix([(small, 3.0), (large, 1.0)], seed=0, total=40) == mixed
    assert mix([(small, 3.0), (large, 1.0)], seed=1, total=40) != mixed
    assert len(mix([(small, 1.0), (large, 1.0)], seed=0)) == 110


@pytest.mark.parametrize("fmt", ["conll", "alpaca", "classification"])
def test_a_folder_given_to_a_text_format_is_named(tmp_path: Path, fmt: str) -> None:
    """Only image and audio formats read folders; a text format gets a clean error, not an
    IsADirectoryError from deep in a reader (found by the recipe fuzz test: data.train = "")."""
    (tmp_path / "rows.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match=f"{tmp_path} is a folder: the {fmt} format reads"):
        load_rows([tmp_path], fmt)
