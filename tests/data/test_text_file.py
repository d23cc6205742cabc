"""text:file: a user's own labelled texts (CSV / TSV / JSON Lines), and the README's BERT recipe end to end on a
fine-tuned-style teacher saved to disk with `save_pretrained` (the real local-folder loading code, no download)."""

import json
import random
from pathlib import Path

import pytest
import torch
import yaml

from kdforge.data import text_source
from kdforge.data.text_file import read_labelled_texts
from kdforge.errors import RecipeError
from kdforge.recipe import DataSpec

WORDS = ["the", "a", "file", "socket", "mail", "queue", "thread", "returns", "message", "event", "loop", "header",
         "server", "client", "data", "is", "of", "to", "and", "in"]


def _reviews(n: int = 120, seed: int = 0) -> list[dict]:
    """Two-class texts with a real signal: 'mail' words vs 'loop' words, plus shared filler."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        topic = ["mail", "message", "header"] if label else ["loop", "event", "thread"]
        words = [rng.choice(topic) if rng.random() < 0.5 else rng.choice(WORDS) for _ in range(8)]
        rows.append({"text": " ".join(words), "label": "email" if label else "asyncio"})
    return rows


def _write_csv(path: Path, rows: list[dict]) -> None:
    lines = ["text,label"] + [f"{r['text']},{r['label']}" for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_csv_with_class_names_and_unlabelled_rows(tmp_path):
    rows = _reviews()
    rows[0]["label"] = ""  # an unlabelled row: transfer data only
    _write_csv(tmp_path / "reviews.csv", rows)
    read = read_labelled_texts(tmp_path / "reviews.csv")
    assert read.classes == ["asyncio", "email"] and read.labels[0] == -1 and read.labels[1] == 1
    spec = DataSpec(source="text:file", args={"path": "reviews.csv", "vocab_size": 60, "seq_len": 12},
                    student_labels=10)
    bundle = text_source(spec, base_dir=tmp_path)
    assert bundle.info.num_classes == 2 and bundle.info.input_shape == (12,)
    evaluated = set(bundle.test.tensors["index"].tolist()) | set(bundle.val.tensors["index"].tolist())
    teacher_rows = set(bundle.teacher_train.tensors["index"].tolist())
    assert 0 not in evaluated and 0 not in teacher_rows  # the unlabelled row is never taught or tested on
    student = bundle.student_train.tensors
    assert 0 in student["index"].tolist() and int(student["labels"][student["index"] == 0]) == -100
    assert int((student["labels"] >= 0).sum()) == 10 == len(bundle.scratch_train)
    assert len(student["index"]) == len(teacher_rows) + 1


def test_jsonl_with_integer_labels_and_bad_inputs(tmp_path):
    rows = [{"sentence": r["text"], "y": int(r["label"] == "email")} for r in _reviews(40)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    read = read_labelled_texts(tmp_path / "d.jsonl", text_field="sentence", label_field="y")
    assert read.classes == ["0", "1"] and read.labels.tolist() == [r["y"] for r in rows]
    with pytest.raises(RecipeError, match=r"recipe.data.args.text_field: .*no field 'text'.*'sentence', 'y'"):
        read_labelled_texts(tmp_path / "d.jsonl", where="recipe.data")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(RecipeError, match="recipe.data.args.format"):
        read_labelled_texts(tmp_path / "d.txt", where="recipe.data")
    with pytest.raises(RecipeError, match="recipe.data.args.path: file .* does not exist"):
        read_labelled_texts(tmp_path / "missing.csv", where="recipe.data")
    (tmp_path / "one.csv").write_text("text,label\na b,x\nc d,x\n")
    with pytest.raises(RecipeError, match="one class"):
        read_labelled_texts(tmp_path / "one.csv")
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": 1}\n{oops\n')
    with pytest.raises(RecipeError, match="line 2 is not JSON"):
        read_labelled_texts(tmp_path / "bad.jsonl")


def test_readme_bert_recipe_on_a_teacher_saved_to_disk(tmp_path):
    """The README's recipe shape: hf: teacher folder (its own tokenizer), text:file data, from_teacher student."""
    transformers = pytest.importorskip("transformers")
    from kdforge.app.run import run_recipe
    from kdforge.recipe import load_recipe

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", *WORDS]
    tokenizer = transformers.BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)})
    assert tokenizer("the mail")["input_ids"] == [2, 6, 10, 3]  # real words, not [UNK]
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=4,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=32,
                                     num_labels=2)
    teacher = transformers.BertForSequenceClassification(config)
    teacher.save_pretrained(tmp_path / "bert-teacher")
    tokenizer.save_pretrained(tmp_path / "bert-teacher")
    _write_csv(tmp_path / "reviews.csv", _reviews())
    recipe = {
        "name": "readme-bert", "seeds": [0],
        "data": {"source": "text:file", "args": {"path": "reviews.csv", "tokenizer": "hf:bert-teacher",
                                                  "seq_len": 16}, "student_labels": 20},
        "teacher": {"model": "hf:bert-teacher", "args": {"task": "sequence_classification"},
                    "inputs": ["input_ids", "attention_mask"]},
        "student": {"model": "from_teacher", "args": {"layers": "every_other"},
                    "inputs": ["input_ids", "attention_mask"]},
        "taps": {"student": {"s0": "bert.encoder.layer.0"},  # PKD-skip: the last layer is left to kd
                 "teacher": {f"t{i}": f"bert.encoder.layer.{i}" for i in range(4)}},
        "losses": [{"name": "kd", "temperature": 2.0}, {"name": "ce"},
                   {"name": "pkd", "pairs": {"map": "skip", "student": ["s0"],
                                             "teacher": ["t0", "t1", "t2", "t3"]}}],
        "train": {"max_steps": 4, "batch_size": 16, "lr": 0.001, "optimizer": "adamw", "progress": False},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = run_recipe(load_recipe(path), out_dir=tmp_path / "run")
    student = result.students[0]
    assert student.model.config.num_hidden_layers == 2 and student.metrics["steps"] == 4
    assert student.metrics["n"] == student.metrics["agreement_n"] == 24  # 20% of 120 rows, one row each
    saved = json.loads((student.folder / "model.json").read_text())
    assert saved["model"].startswith("hf_config:")  # rebuilds without the teacher folder
    # the run keeps the tokenizer its ids came from: new text encodes exactly as the training rows did
    from tokenizers import Tokenizer

    saved_tokenizer = Tokenizer.from_file(str(tmp_path / "run" / "tokenizer.json"))
    assert saved_tokenizer.encode("the mail header").ids == tokenizer("the mail header")["input_ids"]
