"""`text:file`: the user's own labelled texts (CSV, TSV or JSON Lines) as a sentence-classification source.

    data:
      source: text:file
      args: {path: data/reviews.csv, text_field: text, label_field: label, tokenizer: "hf:models/bert-sst2"}

Labels may be class names or integer ids. Names are numbered in sorted order (class k of the report is the k-th
name); integer ids are used as they are. A row whose label is empty is unlabelled: it
never reaches the teacher's training or the test split, and joins the student's training set as transfer data
(labels -100), which only teacher-driven losses use. Everything else (the split, `student_labels`,
`transfer_set`, Tang et al.'s `augment`, the `tokenizer` argument) works as for `text:stdlib_topics`.

`read_records` reads the records of a language-model data file (`text:lm_file`, kdforge.data.chat): JSON Lines,
CSV/TSV, plain text (one document per non-empty line), Parquet (needs pyarrow), a Hugging Face `datasets` folder
written by `save_to_disk`, or `hf:<name>`, a dataset on the hub (needs network); the last three need the
`datasets` package (`pip install 'kdforge[llm]'`).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdforge.errors import RecipeError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
RECORD_FORMATS = {**FORMATS, ".txt": "txt", ".parquet": "parquet"}
LABELLED_FORMATS = ("csv", "tsv", "jsonl")  # text:file: files with a label column
INSTALL_LLM = "pip install 'kdforge[llm]'"


@dataclass
class LabelledTexts:
    """Texts with class ids (-1: unlabelled) and the class names in id order."""

    texts: list[str]
    labels: np.ndarray
    classes: list[str]


def _rows(path: Path, fmt: str, where: str) -> list[dict[str, Any]]:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            if fmt == "jsonl":
                rows = []
                for number, line in enumerate(handle, start=1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as exc:
                            raise RecipeError(f"{where}: {str(path)!r} line {number} is not JSON ({exc.msg}); "
                                              "JSON Lines files hold one object per line.") from None
                return rows
            return list(csv.DictReader(handle, delimiter="\t" if fmt == "tsv" else ","))
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{where}: {str(path)!r} is not UTF-8 text ({exc.reason}).") from None


def read_labelled_texts(path: str | Path, text_field: str = "text", label_field: str = "label",
                        format: str | None = None, where: str = "data") -> LabelledTexts:
    """Read texts and labels from a CSV, TSV or JSON Lines file (`read_records`, which detects the format and
    checks the records); errors name the source argument (`{where}.args.<name>`) and list the fields the file
    has."""
    path = Path(path)
    rows = read_records(path, format, where=where, formats=LABELLED_FORMATS)
    require_fields(rows, {text_field: "text_field", label_field: "label_field"}, path.name, where)
    texts = [str(row[text_field]) for row in rows]
    raw = [row[label_field] for row in rows]
    given = [value for value in raw if value is not None and str(value).strip() != ""]
    if not given:
        raise RecipeError(f"{where}.args.label_field: no row of {path.name!r} has a {label_field!r} label.")
    if all(_is_int(value) for value in given):
        if any(int(value) < 0 for value in given):
            raise RecipeError(f"{where}.args.label_field: integer labels must be >= 0 in {path.name!r} (leave "
                              "the label empty for an unlabelled row).")
        ids = [int(value) if value is not None and str(value).strip() != "" else -1 for value in raw]
        classes = [str(k) for k in range(max(ids) + 1)]
    else:
        classes = sorted({str(value).strip() for value in given})
        number = {name: k for k, name in enumerate(classes)}
        ids = [number[str(value).strip()] if value is not None and str(value).strip() != "" else -1 for value in raw]
    if len(classes) < 2:
        raise RecipeError(f"{where}.args.label_field: {path.name!r} has one class ({classes[0]!r}); a classifier "
                          "needs at least two.")
    return LabelledTexts(texts, np.asarray(ids, dtype=np.int64), classes)


def read_records(path: str | Path, format: str | None = None, split: str = "train", where: str = "data",
                 formats: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """The records (one dict each) of a language-model data source; see the module docstring for the formats.

    `path` is a file, a `datasets` folder (`load_from_disk`; a DatasetDict gives its `split`), or `hf:<name>`
    (`datasets.load_dataset(name, split=split)`, only when the recipe names it). `formats` narrows the file
    formats accepted (`read_labelled_texts`: csv, tsv, jsonl; a folder or hub name is then refused too). Errors
    name `{where}.args.*`.
    """
    if formats is not None and (isinstance(path, str) and path.startswith("hf:") or Path(path).is_dir()):
        raise RecipeError(f"{where}.args.path: {str(path)!r} is not a file; give a {', '.join(formats)} file.")
    formats = formats or tuple(dict.fromkeys(RECORD_FORMATS.values()))
    if isinstance(path, str) and path.startswith("hf:"):
        datasets = _datasets(f"{where}.args.path", path)
        try:
            return _records_of(datasets.load_dataset(path.removeprefix("hf:"), split=split), split, where)
        except (OSError, ValueError, FileNotFoundError) as exc:
            raise RecipeError(f"{where}.args.path: cannot load the dataset {path!r} ({str(exc).splitlines()[0]}); "
                              "a hub name needs network, or give a local file or a save_to_disk folder.") from None
    path = Path(path)
    if path.is_dir():
        datasets = _datasets(f"{where}.args.path", str(path))
        try:
            loaded = datasets.load_from_disk(str(path))
        except (OSError, ValueError, FileNotFoundError) as exc:
            raise RecipeError(f"{where}.args.path: {str(path)!r} is a folder but not one datasets' save_to_disk "
                              f"wrote ({str(exc).splitlines()[0]}).") from None
        return _records_of(loaded, split, where)
    if not path.is_file():
        raise RecipeError(f"{where}.args.path: file {str(path)!r} does not exist (relative paths are relative to "
                          "the recipe's folder).")
    fmt = format or RECORD_FORMATS.get(path.suffix.lower())
    if fmt not in formats:
        names = ", ".join(formats)
        suffixes = ", ".join(suffix for suffix, kind in RECORD_FORMATS.items() if kind in formats)
        raise RecipeError(f"{where}.args.format: cannot tell the format of {path.name!r}; give format: {names} (or "
                          f"use one of the extensions {suffixes}).")
    if fmt == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise RecipeError(f"{where}.args.path: reading {path.name!r} (Parquet) needs pyarrow; {INSTALL_LLM}, "
                              "or give JSON Lines.") from None
        records = pq.read_table(str(path)).to_pylist()
    elif fmt == "txt":
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise RecipeError(f"{where}.args.path: {str(path)!r} is not UTF-8 text ({exc.reason}).") from None
        records = [{"text": line} for line in lines if line.strip()]
    else:
        records = _rows(path, fmt, f"{where}.args.path")
    if not records:
        raise RecipeError(f"{where}.args.path: {str(path)!r} holds no records.")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise RecipeError(f"{where}.args.path: record {i + 1} of {path.name!r} is not an object of fields.")
    return records


def require_fields(records: list[dict[str, Any]], fields: dict[str, str], name: str, where: str = "data") -> None:
    """Every record has each of `fields` ({field: the source argument that names it}); else an error naming
    `{where}.args.<argument>` and listing the fields the record has."""
    for i, record in enumerate(records):
        for field, arg in fields.items():
            if field not in record:
                raise RecipeError(f"{where}.args.{arg}: record {i + 1} of {name!r} has no field {field!r}; its "
                                  f"fields are {', '.join(map(repr, record))}.")


def _datasets(where: str, what: str):
    try:
        import datasets
    except ImportError:
        raise RecipeError(f"{where}: reading {what!r} needs the datasets package; {INSTALL_LLM}.") from None
    return datasets


def _records_of(loaded: Any, split: str, where: str) -> list[dict[str, Any]]:
    """The rows of a datasets Dataset, or of `split` of a DatasetDict, as dicts."""
    if hasattr(loaded, "keys") and not hasattr(loaded, "column_names"):
        if split not in loaded:
            raise RecipeError(f"{where}.args.split: the dataset has no split {split!r}; it has "
                              f"{', '.join(map(repr, loaded.keys()))}.")
        loaded = loaded[split]
    records = loaded.to_list()
    if not records:
        raise RecipeError(f"{where}.args.path: the dataset holds no records.")
    return records


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.strip().lstrip("-").isdigit()


__all__ = ["FORMATS", "INSTALL_LLM", "LABELLED_FORMATS", "RECORD_FORMATS", "LabelledTexts", "read_labelled_texts",
           "read_records", "require_fields"]
