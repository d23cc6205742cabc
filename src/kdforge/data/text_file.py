"""`text:file`: the user's own labelled texts (CSV, TSV or JSON Lines) as a sentence-classification source.

    data:
      source: text:file
      args: {path: data/reviews.csv, text_field: text, label_field: label, tokenizer: "hf:models/bert-sst2"}

Labels may be class names or integer ids. Names are numbered in sorted order (class k of the report is the k-th
name); integer ids are used as they are. A row whose label is empty is unlabelled: it
never reaches the teacher's training or the test split, and joins the student's training set as transfer data
(labels -100), which only teacher-driven losses use. Everything else (the split, `student_labels`,
`transfer_set`, Tang et al.'s `augment`, the `tokenizer` argument) works as for `text:stdlib_topics`.
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
    """Read texts and labels; errors name the source argument (`{where}.args.<name>`) and list the fields the file
    has."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{where}.args.path: file {str(path)!r} does not exist (relative paths are relative "
                          "to the recipe's folder).")
    fmt = format or FORMATS.get(path.suffix.lower())
    if fmt not in ("csv", "tsv", "jsonl"):
        raise RecipeError(f"{where}.args.format: cannot tell the format of {path.name!r}; give format: csv, tsv "
                          "or jsonl (or use one of the extensions .csv, .tsv, .jsonl).")
    rows = _rows(path, fmt, f"{where}.args.path")
    if not rows:
        raise RecipeError(f"{where}.args.path: {str(path)!r} holds no rows.")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RecipeError(f"{where}.args.path: row {i + 1} of {path.name!r} is not an object of fields.")
        for field, arg in ((text_field, "text_field"), (label_field, "label_field")):
            if field not in row:
                raise RecipeError(f"{where}.args.{arg}: row {i + 1} of {path.name!r} has no field {field!r}; "
                                  f"its fields are {', '.join(map(repr, row))}.")
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


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.strip().lstrip("-").isdigit()


__all__ = ["FORMATS", "LabelledTexts", "read_labelled_texts"]
