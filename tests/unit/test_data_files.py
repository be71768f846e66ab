"""Reading records from files: every reader, origins, and malformed rows named by file and line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.data.errors import DataError
from launcher.data.files import read_records, reader_for


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_reader_by_extension_and_override(tmp_path: Path) -> None:
    assert reader_for("a/train.JSONL") == "jsonl"
    assert reader_for("x.annotated", "conll") == "conll"
    with pytest.raises(ValueError, match="cannot tell the file type"):
        reader_for(tmp_path / "train.txt")
    with pytest.raises(ValueError, match="unknown reader 'xml'"):
        reader_for("train.jsonl", "xml")


def test_jsonl_records_carry_their_line(fixture_data: Path) -> None:
    result = read_records(fixture_data / "gsm8k.jsonl")
    assert len(result.records) == 24
    assert result.records[3].origin.line == 4
    assert set(result.records[0].data) == {"question", "answer"}


def test_json_array_records_carry_the_line_their_object_starts_on(fixture_data: Path) -> None:
    path = fixture_data / "alpaca.json"
    result = read_records(path)
    assert len(result.records) == 30
    lines = path.read_text(encoding="utf-8").splitlines()
    for record in result.records:
        assert lines[record.origin.line - 1].strip() == "{"
        assert (
            json.dumps(record.data["instruction"], ensure_ascii=False) in lines[record.origin.line]
        )


def test_tsv_keeps_quotes_and_counts_lines(fixture_data: Path, tmp_path: Path) -> None:
    result = read_records(fixture_data / "sst2_train.tsv")
    assert len(result.records) == 40
    assert result.records[0].data == {
        "sentence": "hide new secretions from the parental units ",
        "label": "0",
    }
    assert result.records[0].origin.line == 2
    quoted = write(tmp_path / "q.tsv", 'sentence\tlabel\n"quoted" start\t1\n')
    assert read_records(quoted).records[0].data["sentence"] == '"quoted" start'


def test_csv_multiline_field_origin_is_its_first_line(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", 'text,label\n"two\nlines, one field",pos\n\nplain,neg\n')
    records = read_records(path).records
    assert [r.data["text"] for r in records] == ["two\nlines, one field", "plain"]
    assert [r.origin.line for r in records] == [2, 5]


def test_parquet_rows(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "label": [0, 1]}), path)
    records = read_records(path).records
    assert [r.data for r in records] == [{"text": "a", "label": 0}, {"text": "b", "label": 1}]
    assert str(records[1].origin) == f"{path}:row 1"


def test_conll_splits_on_blank_and_whitespace_only_lines(fixture_data: Path) -> None:
    records = read_records(fixture_data / "wnut17.conll").records
    assert len(records) == 40
    first = records[0]
    assert first.origin.line == 1
    assert first.data["tokens"][:3] == ["going", "to", "tucson"]
    assert first.data["tags"][:3] == ["O", "O", "B-location"]
    assert all(len(r.data["tokens"]) == len(r.data["tags"]) > 0 for r in records)


def test_conll_space_separated_docstart_and_extra_columns(tmp_path: Path) -> None:
    text = "-DOCSTART- -X- O O\n\nEU NNP B-ORG\nrejects VBZ O\n  \nPeter NNP B-PER\n"
    records = read_records(write(tmp_path / "d.conll", text)).records
    assert [r.data for r in records] == [
        {"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]},
        {"tokens": ["Peter"], "tags": ["B-PER"]},
    ]
    assert [r.origin.line for r in records] == [3, 6]


@pytest.mark.parametrize(
    ("name", "text", "line", "reason"),
    [
        ("d.jsonl", '{"a": 1}\n{"a": \n', 2, "invalid JSON"),
        ("d.jsonl", '{"a": 1}\n\n[1, 2]\n', 3, "expected a JSON object, got [1, 2]"),
        ("d.tsv", "sentence\tlabel\nok\t1\ntoo\tmany\tcolumns\n", 3, "expected 2 columns"),
        ("d.conll", "a\tO\nb\n\nc\tO\n", 2, "expected 'token<TAB>tag'"),
        ("d.json", '[\n  {"a": 1},\n  "text"\n]\n', 3, 'expected a JSON object, got "text"'),
    ],
)
def test_bad_rows_name_file_and_line(
    tmp_path: Path, name: str, text: str, line: int, reason: str
) -> None:
    path = write(tmp_path / name, text)
    with pytest.raises(DataError) as caught:
        read_records(path)
    error = caught.value
    assert (error.path, error.line) == (str(path), line)
    assert reason in error.reason
    assert str(error).startswith(f"{path}:{line}: ")


def test_skip_mode_counts_bad_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", '{"a": 1}\nnot json\n{"a": 2}\n"str"\n')
    result = read_records(path, on_bad_row="skip")
    assert [r.data["a"] for r in result.records] == [1, 2]
    assert [e.line for e in result.skipped] == [2, 4]


def test_json_array_syntax_error_is_fatal_even_when_skipping(tmp_path: Path) -> None:
    path = write(tmp_path / "d.json", '[\n  {"a": 1},\n  {"a": }\n]\n')
    with pytest.raises(DataError) as caught:
        read_records(path, on_bad_row="skip")
    assert caught.value.line == 3


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    with pytest.raises(DataError, match="not valid UTF-8") as caught:
        read_records(path)
    assert caught.value.line == 2


def test_control_plane_modules_import_no_training_stack() -> None:
    code = (
        "import sys, launcher.data.formats, launcher.data.mixing\n"
        "heavy = {'torch', 'transformers', 'tokenizers', 'datasets'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
