"""Normalise every supported data format into one canonical row shape per task family.

No torch or transformers here (the control plane validates data files with it).

Canonical rows:

- causal LM, chat: ``{"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": str}],
  "tools": [...]}`` (``tools`` only when the row has some) from "alpaca" (instruction, input,
  output, optional system; the user turn is the instruction, then a blank line and the input when
  the input is not empty), "messages" (content a string or a list of typed parts, text parts
  joined by newlines, part key ``text`` or ``value``), "sharegpt" (``conversations: [{from,
  value}]``, or LLaMA-Factory's ``columns = {messages = "conversations"}``, optional ``system``)
  and "prompt_completion" (prompt, completion, optional system). Every conversation holds at least
  one assistant turn. Tool calling ("messages" and "sharegpt", shapes in `launcher.data.messages`):
  assistant ``tool_calls``, ``"tool"`` results, a ``tools`` column of schemas (list or JSON
  string); ShareGPT's ``function_call`` turns become tool calls, ``observation`` turns results.
- causal LM, plain text: ``{"text": str}`` ("text"): loss on every token.
- classification: ``{"text": str, "text_pair": str | None, "label": int}`` ("classification").
- token classification: ``{"tokens": list[str], "tags": list[int]}`` ("conll", or "tokens" for
  JSON-like rows ``{"tokens": [...], "tags": [...]}``).
- object detection: an image, its boxes and their labels ("detection", `launcher.data.boxes`).
- images and recordings: ``{"image" | "audio": str | bytes, "label": int}`` ("image", "audio"):
  a folder with one subfolder per class, or rows whose ``image``/``audio`` is a file path
  (relative to the data file's folder), a file's bytes, or a Hub Image/Audio feature.
- segmentation: ``{"image": ..., "mask": ...}`` ("segmentation"): files as above; masks: class ids.

Labels and tags become ids through a `LabelMap` built from the rows loaded (the training files)
or passed in (for eval files). With ``labelled=False`` (to predict) rows need no label:
classification and token rows have none, and a conversation may lack its answer (alpaca
``output``, ``completion``). ``columns`` renames fields: ``{"instruction":
"prompt_text"}`` reads the canonical ``instruction`` field from the ``prompt_text`` column.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.data.boxes import read_boxes
from launcher.data.errors import BadRowPolicy, DataError, handle_bad_row
from launcher.data.fields import Fields, RowError
from launcher.data.files import Record, describe, read_records
from launcher.data.labels import LabelMap
from launcher.data.messages import (
    MessageError,
    check_tool_order,
    openai_message,
    sharegpt_message,
    tool_schemas,
)

# Every format and its canonical input fields (the keys a column mapping may rename).
FIELDS: dict[str, tuple[str, ...]] = {
    "alpaca": ("instruction", "input", "output", "system"),
    "messages": ("messages", "tools"),
    "sharegpt": ("conversations", "messages", "system", "tools"),
    "prompt_completion": ("prompt", "completion", "system"),
    "text": ("text",),
    "classification": ("text", "text_pair", "label"),
    "conll": (),
    "tokens": ("tokens", "tags"),
    "image": ("image", "label"),
    "audio": ("audio", "label"),
    "transcript": ("audio", "text"),
    "detection": ("image", "xmin", "ymin", "xmax", "ymax", "label"),
    "segmentation": ("image", "mask"),
}
FORMATS: tuple[str, ...] = tuple(FIELDS)  # the one list of formats (the recipe schema's too)
LABELLED = {"classification": "label", "conll": "tags", "tokens": "tags", "image": "label",
            "audio": "label"}
FOLDER_READERS = {"image": "imagefolder", "audio": "audiofolder",  # files, by class subfolder
                  "transcript": "audiofolder",  # a folder of recordings (to transcribe)
                  "segmentation": "maskfolder"}  # images and their masks, by file stem
GROUPED = {"detection": read_boxes}  # formats whose rows gather several records (boxes)


@dataclass
class LoadedRows:
    """Canonical rows, the bad rows skipped (``len(skipped)`` is the count), the label map."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[DataError] = field(default_factory=list)
    label_map: LabelMap | None = None


def load_rows(paths: Sequence[str | Path], fmt: str, columns: Mapping[str, str] | None = None,
              on_bad_row: BadRowPolicy = "error", label_map: LabelMap | None = None,
              reader: str | None = None, labelled: bool = True, role: str = "train"
              ) -> LoadedRows:
    """Read `paths` in order and normalise each record of format `fmt` to its canonical row.

    A bad row raises `DataError` (file and line) under "error", or is skipped and kept in
    `skipped` under "skip". `reader` overrides the file type told by the extension ("conll" is
    always read as CoNLL). Labelled formats map labels through `label_map`, or through a map
    built from these rows when it is None; `labelled=False` reads rows without labels. `role`
    ("train" or "eval") picks the split an `hf:` source reads when it names none.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown data format {fmt!r}; expected one of {FORMATS}")
    columns = dict(columns or {})
    unknown = sorted(set(columns) - set(FIELDS[fmt]))
    if unknown:
        raise ValueError(
            f"columns {unknown} are not fields of format {fmt!r} (fields: {list(FIELDS[fmt])})"
        )
    if fmt in GROUPED:  # several records per row (an image's boxes): their own reader
        return LoadedRows(*GROUPED[fmt](list(paths), columns, on_bad_row, label_map, labelled))
    normalise = _NORMALISERS[fmt]
    loaded = LoadedRows()
    records: list[Record] = []
    for path in paths:
        folder = FOLDER_READERS.get(fmt) if Path(path).is_dir() else None
        if Path(path).is_dir() and folder is None:
            raise ValueError(f"{path} is a folder: the {fmt} format reads a data file (folders "
                             "hold images or recordings)")
        result = read_records(path, "conll" if fmt == "conll" else reader or folder, on_bad_row,
                              role)
        loaded.skipped.extend(result.skipped)
        for record in result.records:
            try:
                fields = Fields(record.data, columns, labelled, Path(record.origin.path).parent)
                loaded.rows.append(normalise(fields))
                records.append(record)
            except (RowError, MessageError) as exc:
                handle_bad_row(DataError(record.origin, str(exc)), on_bad_row, loaded.skipped)
    if labelled and fmt in LABELLED and loaded.rows:
        _map_labels(loaded, records, LABELLED[fmt], label_map, on_bad_row)
    return loaded


def _map_labels(
    loaded: LoadedRows,
    records: list[Record],
    key: str,
    label_map: LabelMap | None,
    on_bad_row: BadRowPolicy,
) -> None:
    """Replace label names by ids in place, dropping (or raising on) rows with unknown labels."""
    if label_map is None:
        values = (v for row in loaded.rows for v in (row[key] if key == "tags" else [row[key]]))
        label_map = LabelMap.build(values)
    kept = []
    for row, record in zip(loaded.rows, records, strict=True):
        try:
            if key == "tags":
                row[key] = [label_map.id_of(tag) for tag in row[key]]
            else:
                row[key] = label_map.id_of(row[key])
        except KeyError as exc:
            handle_bad_row(DataError(record.origin, exc.args[0]), on_bad_row, loaded.skipped)
            continue
        kept.append(row)
    loaded.rows = kept
    loaded.label_map = label_map


def _chat(turns: list[tuple[str, str]], system: str | None, labelled: bool) -> dict[str, Any]:
    messages = [{"role": role, "content": content} for role, content in turns]
    return _conversation(messages, system, labelled)


def _conversation(messages: list[dict[str, Any]], system: str | None, labelled: bool,
                  tools: list[dict[str, Any]] | None = None,
                  unit: str = "message") -> dict[str, Any]:
    """The canonical row: `system` first when given, ``tools`` only when there are some."""
    check_tool_order(messages, unit)
    messages = [{"role": "system", "content": system}, *messages] if system else messages
    if labelled and not any(message["role"] == "assistant" for message in messages):
        raise RowError("the conversation has no assistant turn to learn from")
    return {"messages": messages, "tools": tools} if tools else {"messages": messages}


def _alpaca(row: Fields) -> dict[str, Any]:
    row.require("instruction", *row.label_fields("output"))
    instruction, extra, output = row.text("instruction"), row.text("input"), row.text("output")
    user = f"{instruction}\n\n{extra}" if extra else instruction
    turns = [("user", user)] + ([("assistant", output)] if output is not None else [])
    return _chat(turns, row.text("system"), row.labelled)


def _prompt_completion(row: Fields) -> dict[str, Any]:
    row.require("prompt", *row.label_fields("completion"))
    turns = [("user", row.text("prompt"))]
    if (completion := row.text("completion")) is not None:
        turns.append(("assistant", completion))
    return _chat(turns, row.text("system"), row.labelled)


def _messages(row: Fields) -> dict[str, Any]:
    row.require("messages")
    messages = [openai_message(message, index)
                for index, message in enumerate(row.items("messages"))]
    tools = tool_schemas(row.get("tools"), row.column("tools"))
    return _conversation(messages, None, row.labelled, tools)


def _sharegpt(row: Fields) -> dict[str, Any]:
    name = "messages" if "messages" in row.columns else "conversations"  # LLaMA-Factory's name
    row.require(name)
    messages = [sharegpt_message(turn, index) for index, turn in enumerate(row.items(name))]
    tools = tool_schemas(row.get("tools"), row.column("tools"))
    return _conversation(messages, row.text("system"), row.labelled, tools, unit="turn")


def _text(row: Fields) -> dict[str, Any]:
    row.require("text")
    text = row.text("text")
    if not text.strip():
        raise RowError(f'"{row.column("text")}" is empty')
    return {"text": text}


def _label(row: Fields) -> str | int:  # a class name or id
    label = row.get("label")
    if isinstance(label, bool) or not isinstance(label, str | int):
        raise RowError(f'"{row.column("label")}" must be a string or an integer, got {label!r}')
    return label


def _image(row: Fields) -> dict[str, Any]:
    return _file(row, "image")


def _audio(row: Fields) -> dict[str, Any]:
    return _file(row, "audio")


def _transcript(row: Fields) -> dict[str, Any]:
    """A recording and, labelled, its transcript."""
    row.require("audio", *row.label_fields("text"))
    text = row.text("text")
    return {**_file(row, "audio", target=None), **({"text": text} if row.labelled else {})}


def _file(row: Fields, name: str, target: str | None = "label") -> dict[str, Any]:
    """A path (made absolute; it must exist), encoded bytes, or a Hub Image or Audio feature's
    value (not decoded: bytes or path; a decoded picture is kept losslessly as PNG); and the
    `target` label of a labelled row."""
    row.require(name, *(row.label_fields(target) if target else ()))
    value = row.get(name)
    if isinstance(value, dict):  # a Hub feature not decoded: {"bytes": ..., "path": ...}
        value = value.get("bytes") or value.get("path")
    elif hasattr(value, "save"):  # a decoded picture (PIL): its pixels, losslessly
        value.save(buffer := io.BytesIO(), format="PNG")
        value = buffer.getvalue()
    if isinstance(value, str):
        path = row.folder / value
        if not path.is_file():
            raise RowError(f"{name} file not found: {path}")
        value = str(path.resolve())
    elif not isinstance(value, bytes) or not value:
        raise RowError(f'"{row.column(name)}" must be a file path or the bytes of a file, '
                       f"got {describe(value)}")
    return {name: value, **({"label": _label(row)} if row.labelled and target else {})}


def _segmentation(row: Fields) -> dict[str, Any]:  # an image and, labelled, its mask
    row.require("image", *row.label_fields("mask"))
    return {**_file(row, "image", None), **(_file(row, "mask", None) if row.labelled else {})}


def _classification(row: Fields) -> dict[str, Any]:
    row.require("text", *row.label_fields("label"))
    if not row.labelled:
        return {"text": row.text("text"), "text_pair": row.text("text_pair")}
    return {"text": row.text("text"), "text_pair": row.text("text_pair"), "label": _label(row)}


def _tokens(row: Fields) -> dict[str, Any]:
    row.require("tokens", *row.label_fields("tags"))
    tokens = row.items("tokens")
    if not all(isinstance(token, str) for token in tokens):
        raise RowError(f'"{row.column("tokens")}" must hold strings, got {describe(tokens)}')
    if not row.labelled:
        return {"tokens": tokens}
    tags = row.items("tags")
    if not all(isinstance(tag, str | int) and not isinstance(tag, bool) for tag in tags):
        raise RowError(f'"{row.column("tags")}" must hold strings or ints, got {describe(tags)}')
    if len(tokens) != len(tags):
        raise RowError(f"{len(tokens)} tokens but {len(tags)} tags")
    return {"tokens": tokens, "tags": tags}


_NORMALISERS: dict[str, Callable[[Fields], dict[str, Any]]] = {
    "alpaca": _alpaca,
    "messages": _messages,
    "sharegpt": _sharegpt,
    "prompt_completion": _prompt_completion,
    "text": _text,
    "classification": _classification,
    "conll": _tokens,
    "tokens": _tokens,
    "image": _image,
    "audio": _audio,
    "transcript": _transcript,
    "segmentation": _segmentation,
}
