"""Read records from data files; every record carries its origin (file and line, or row).

No torch or transformers here: the control plane uses this module to validate data files before
any process starts. Readers, chosen by file extension unless named explicitly:

- ``jsonl``: one JSON object per line; blank lines are ignored.
- ``json``: a JSON array of objects (each record's origin is the line its object starts on), or
  JSON lines when the file does not start with ``[``. A syntax error inside an array is always
  fatal: the rest of the array cannot be recovered.
- ``csv`` / ``tsv``: a header line naming the columns, then one record per row. TSV fields are
  taken verbatim (no quoting), so quotes inside sentences survive.
- ``parquet``: one record per row; the origin is the 0-based row index.
- ``hf:`` sources (not files): the rows of a Hub dataset split, see `launcher.data.hub_data`;
  the origin is the 0-based row index.
- ``imagefolder`` (a folder, not a file): one subfolder per class holding its images, as
  `datasets`' imagefolder; a record is ``{"image": path, "label": subfolder}`` whose origin is the
  image file. Files of other types are ignored; a class folder without an image is an error. A
  folder of images without subfolders gives unlabelled records (images to predict).
- ``conll``: one ``token<TAB or space>tag`` per line (extra middle columns are ignored), sentences
  split by blank or whitespace-only lines, ``-DOCSTART-`` lines skipped. A record is
  ``{"tokens": [...], "tags": [...]}`` whose origin is the line of its first token.
- ``json`` holding a COCO document (images, annotations, categories): one record per image,
  ``{"image": path, "mask": PNG bytes}``, its polygons rasterised (`launcher.data.coco_masks`).
- ``maskfolder`` (a folder): images and their segmentation masks in two subfolders (`MASK_FOLDERS`:
  VOC's ``JPEGImages`` and ``SegmentationClass``, or ``images`` and ``masks``), paired by file
  stem; a record is ``{"image": path, "mask": path}`` whose origin is the image (or the mask with
  no image). An image without a mask, or a mask without an image, is a bad row. A folder with
  neither subfolder gives its own images, unlabelled (to predict).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.data.coco_masks import coco_document, coco_mask_records
from launcher.data.errors import BadRowPolicy, DataError, Origin, handle_bad_row
from launcher.data.hub_data import HubData, is_hub_data

READERS = ("jsonl", "json", "csv", "tsv", "parquet", "conll", "imagefolder", "audiofolder",
           "maskfolder")
_BY_SUFFIX = {f".{name}": name for name in READERS}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
MASK_FOLDERS = (("JPEGImages", "SegmentationClass"), ("images", "masks"))  # (images, masks)


@dataclass(frozen=True)
class Record:
    """One raw record and where it came from."""

    data: dict[str, Any]
    origin: Origin


@dataclass
class ReadResult:
    """The records read from one file, and the bad rows skipped (empty under "error")."""

    records: list[Record] = field(default_factory=list)
    skipped: list[DataError] = field(default_factory=list)


def reader_for(path: str | Path, reader: str | None = None) -> str:
    """The reader for `path`: `reader` when given, else the one its extension names."""
    if reader is not None and reader not in READERS:
        raise ValueError(f"unknown reader {reader!r}; expected one of {READERS}")
    folder = "imagefolder" if Path(path).is_dir() else None  # unless the format says audio
    name = reader or folder or _BY_SUFFIX.get(Path(path).suffix.lower())
    if name is None:
        raise ValueError(
            f"{path}: cannot tell the file type from its extension; name a reader, one of {READERS}"
        )
    return name


def read_records(
    path: str | Path, reader: str | None = None, on_bad_row: BadRowPolicy = "error",
    role: str = "train",
) -> ReadResult:
    """Read every record of `path`; a malformed one raises `DataError` or is skipped and counted.
    An `hf:` source is read through `datasets` (its default split is `role`'s)."""
    if is_hub_data(str(path)):
        source = HubData.parse(str(path), role)
        return ReadResult([Record(row, Origin(str(source), index, "row"))
                           for index, row in enumerate(source.rows())])
    readers = {
        "jsonl": _read_json_lines,
        "json": _read_json,
        "csv": _read_csv,
        "tsv": _read_tsv,
        "parquet": _read_parquet,
        "conll": _read_conll,
        "imagefolder": lambda folder: _read_folder(folder, "image", IMAGE_SUFFIXES),
        "audiofolder": lambda folder: _read_folder(folder, "audio", AUDIO_SUFFIXES),
        "maskfolder": _read_mask_folder,
    }
    result = ReadResult()
    for item in readers[reader_for(path, reader)](str(path)):
        if isinstance(item, DataError):
            handle_bad_row(item, on_bad_row, result.skipped)
        else:
            result.records.append(item)
    return result


def describe(value: Any, limit: int = 80) -> str:
    """A short rendering of a value for error messages."""
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _text_lines(path: str) -> Iterator[str]:
    """The lines of a UTF-8 file, line endings kept; bad encoding is fatal and names the line."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(Origin(path, number), f"not valid UTF-8 ({exc.reason})") from None
            yield text.removeprefix("\ufeff") if number == 1 else text


def _object(value: Any, origin: Origin) -> Record | DataError:
    if isinstance(value, dict):
        return Record(value, origin)
    return DataError(origin, f"expected a JSON object, got {describe(value)}")


def _read_json_lines(path: str) -> Iterator[Record | DataError]:
    for number, text in enumerate(_text_lines(path), start=1):
        if not text.strip():
            continue
        origin = Origin(path, number)
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            yield DataError(origin, f"invalid JSON: {exc.msg} (column {exc.colno})")
            continue
        yield _object(value, origin)


def _read_json(path: str) -> Iterator[Record | DataError]:
    text = "".join(_text_lines(path))
    if (coco := coco_document(text)) is not None:  # images with polygons: masks
        yield from (item if isinstance(item, DataError) else Record(*item)
                    for item in coco_mask_records(path, coco))
        return
    if not text.lstrip().startswith("["):
        yield from _read_json_lines(path)
        return
    decoder = json.JSONDecoder()
    position = _skip_space(text, text.index("[") + 1)
    line = 1 + text.count("\n", 0, position)
    expect_item = text[position : position + 1] != "]"
    while expect_item:
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise DataError(Origin(path, exc.lineno), f"invalid JSON: {exc.msg}") from None
        yield _object(value, Origin(path, line))
        after = _skip_space(text, end)
        separator = text[after : after + 1]
        if separator not in (",", "]"):
            line_at = 1 + text.count("\n", 0, after)
            raise DataError(Origin(path, line_at), "invalid JSON: expected ',' or ']' in the array")
        next_position = _skip_space(text, after + 1)
        line += text.count("\n", position, next_position)
        position = next_position
        expect_item = separator == ","


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _read_csv(path: str) -> Iterator[Record | DataError]:
    yield from _read_delimited(path, csv.reader(_text_lines(path)))


def _read_tsv(path: str) -> Iterator[Record | DataError]:
    rows = csv.reader(_text_lines(path), delimiter="\t", quoting=csv.QUOTE_NONE)
    yield from _read_delimited(path, rows)


def _read_delimited(path: str, rows: Any) -> Iterator[Record | DataError]:
    header: list[str] | None = None
    start = 1
    try:
        for row in rows:
            origin = Origin(path, start)
            start = rows.line_num + 1
            if not row:
                continue
            if header is None:
                header = [name.strip() for name in row]
                continue
            if len(row) != len(header):
                reason = f"expected {len(header)} columns {header}, got {len(row)}: {describe(row)}"
                yield DataError(origin, reason)
                continue
            yield Record(dict(zip(header, row, strict=True)), origin)
    except csv.Error as exc:
        raise DataError(Origin(path, start), f"malformed CSV: {exc}") from None


def _read_parquet(path: str) -> Iterator[Record | DataError]:
    import pyarrow.parquet as pq

    for index, row in enumerate(pq.read_table(path).to_pylist()):
        yield Record(row, Origin(path, index, "row"))


def _read_conll(path: str) -> Iterator[Record | DataError]:
    tokens: list[str] = []
    tags: list[str] = []
    first = 0
    error: DataError | None = None
    for number, text in enumerate([*_text_lines(path), ""], start=1):
        content = text.rstrip("\r\n")
        if not content.strip():
            if error is not None:
                yield error
            elif tokens:
                yield Record({"tokens": tokens, "tags": tags}, Origin(path, first))
            tokens, tags, error = [], [], None
            continue
        parts = content.split("\t") if "\t" in content else content.split(" ")
        token, tag = parts[0], parts[-1].strip()
        if token == "-DOCSTART-":
            continue
        if not tokens and error is None:
            first = number
        if len(parts) < 2 or not token or not tag:
            error = error or DataError(
                Origin(path, number), f"expected 'token<TAB>tag', got {describe(content)}"
            )
            continue
        tokens.append(token)
        tags.append(tag)


def _read_folder(path: str, field: str,
                 suffixes: tuple[str, ...]) -> Iterator[Record | DataError]:
    """Each class subfolder's files of `suffixes` (any depth below it) as `{field: path,
    "label": subfolder}`, classes and files in sorted order; without subfolders, the folder's
    own files, unlabelled (to predict)."""
    root = Path(path)
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        yield from (Record({field: str(file)}, Origin(str(file), 0, "file"))
                    for file in _files(root, suffixes, recursive=False))
        return
    for folder in classes:
        files = _files(folder, suffixes, recursive=True)
        if not files:
            yield DataError(Origin(str(folder), 0, "file"), f"a label folder with no {field} "
                            f"files ({', '.join(suffixes)}): remove it or add its files")
        for file in files:
            yield Record({field: str(file), "label": folder.name}, Origin(str(file), 0, "file"))


def _files(folder: Path, suffixes: tuple[str, ...], recursive: bool) -> list[Path]:
    """The files of `suffixes` in `folder` (and below it), sorted; hidden files left out."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in suffixes
                  and not p.name.startswith("."))


def _read_mask_folder(path: str) -> Iterator[Record | DataError]:
    """Images and masks of the first `MASK_FOLDERS` pair present, paired by file stem, in
    sorted order; without one, the folder's own images, unlabelled."""
    root = Path(path)
    pair = next(((root / i, root / m) for i, m in MASK_FOLDERS if (root / i).is_dir()), None)
    if pair is None:
        yield from (Record({"image": str(file)}, Origin(str(file), 0, "file"))
                    for file in _files(root, IMAGE_SUFFIXES, recursive=False))
        return
    images = {p.stem: p for p in _files(pair[0], IMAGE_SUFFIXES, recursive=False)}
    masks = ({p.stem: p for p in _files(pair[1], IMAGE_SUFFIXES, recursive=False)}
             if pair[1].is_dir() else {})
    for stem in sorted(images.keys() | masks.keys()):
        image, mask = images.get(stem), masks.get(stem)
        if image is None:
            yield DataError(Origin(str(mask), 0, "file"), f"a mask with no image: no {stem}.* "
                            f"in {pair[0]}; add the image or remove the mask")
        elif mask is None:
            yield DataError(Origin(str(image), 0, "file"), f"an image with no mask: no "
                            f"{stem}.png in {pair[1]}; add its mask or remove the image")
        else:
            yield Record({"image": str(image), "mask": str(mask)}, Origin(str(image), 0, "file"))
