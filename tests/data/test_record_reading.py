"""One reader for every file-backed text source: text:file's labelled texts are read by `read_records` (format
detection, record checks and their messages in one place) and only narrowed to the formats with a label column."""

import json

import pytest

from kdforge.data.text_file import read_labelled_texts, read_records, require_fields
from kdforge.errors import RecipeError


def _messages(call) -> str:
    with pytest.raises(RecipeError) as info:
        call()
    return str(info.value)


@pytest.mark.parametrize(("name", "content"), [
    ("missing.jsonl", None),
    ("bad.jsonl", '{"text": "a", "label": 1}\n{oops\n'),
    ("empty.csv", "text,label\n"),
    ("list.jsonl", '{"text": "a", "label": 1}\n[1, 2]\n'),
])
def test_labelled_texts_and_records_fail_alike(tmp_path, name, content):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    labelled = _messages(lambda: read_labelled_texts(path, where="recipe.data"))
    records = _messages(lambda: read_records(path, where="recipe.data"))
    assert labelled == records and labelled.startswith("recipe.data.args.path: ")


def test_labelled_texts_keep_to_files_with_a_label_column(tmp_path):
    (tmp_path / "d.parquet").write_bytes(b"PAR1")
    message = _messages(lambda: read_labelled_texts(tmp_path / "d.parquet", where="recipe.data"))
    assert message.startswith("recipe.data.args.format: ") and "csv, tsv, jsonl" in message
    assert "parquet" not in message.split(";", 1)[1]
    folder = _messages(lambda: read_labelled_texts(tmp_path, where="recipe.data"))
    assert folder.startswith("recipe.data.args.path: ") and "is not a file" in folder
    (tmp_path / "d.txt").write_text("one line\n")
    assert read_records(tmp_path / "d.txt") == [{"text": "one line"}]  # the language-model reader keeps them all


def test_field_checks_name_the_argument_and_list_the_fields(tmp_path):
    rows = [{"sentence": "a", "y": 0}, {"sentence": "b", "y": 1}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    message = _messages(lambda: read_labelled_texts(tmp_path / "d.jsonl", text_field="sentence", where="recipe.data"))
    assert message == ("recipe.data.args.label_field: record 1 of 'd.jsonl' has no field 'label'; its fields are "
                       "'sentence', 'y'.")
    require_fields(rows, {"sentence": "text_field", "y": "label_field"}, "d.jsonl")  # all present: no error
    with pytest.raises(RecipeError, match=r"^data\.args\.text_field: record 2 of 'x' has no field 'text'"):
        require_fields([{"text": "a"}, {"body": "b"}], {"text": "text_field"}, "x")
