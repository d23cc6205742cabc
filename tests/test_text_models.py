"""builtin:bert / bilstm / textcnn: shapes, padding invariance, argument errors, and a tiny BERT that learns topics."""

import pytest
import torch

from kdforge.errors import RecipeError
from kdforge.models import DataInfo, build_model

INFO = DataInfo((12,), 5)


def _batch(b=4, t=12, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (b, t), generator=g)
    attention = torch.ones(b, t, dtype=torch.long)
    for row, length in enumerate([t, 7, 2, 1][:b]):
        attention[row, length:] = 0
    return ids.masked_fill(attention == 0, 0), attention


@pytest.mark.parametrize(("name", "args"), [("bilstm", {"pooling": "last"}), ("bilstm", {"pooling": "max"}),
                                            ("textcnn", {})])
def test_small_text_students_ignore_appended_padding(name, args):
    model, _ = build_model(f"builtin:{name}", {"vocab_size": 50, **args}, INFO, "recipe.student")
    model.eval()
    ids, attention = _batch()
    logits = model(ids, attention)
    assert logits.shape == (4, 5)
    padded = model(torch.nn.functional.pad(ids, (0, 6)), torch.nn.functional.pad(attention, (0, 6)))
    torch.testing.assert_close(padded, logits, rtol=0, atol=1e-6)
    changed = ids.clone()
    changed[1, 3] = 4 if ids[1, 3] != 4 else 5  # a real token: the logits must move (the check can fail)
    assert not torch.allclose(model(changed, attention)[1], logits[1])


@pytest.mark.parametrize(("task", "shape"), [("sequence_classification", (4, 5)), ("token_classification", (4, 12, 5)),
                                             ("masked_lm", (4, 12, 50))])
def test_bert_heads(task, shape):
    info = DataInfo((12,), 50 if task == "masked_lm" else 5)
    model, args = build_model("builtin:bert", {"vocab_size": 50, "task": task, "layers": 1, "hidden": 16, "heads": 2},
                              info, "recipe.teacher")
    ids, attention = _batch()
    assert model(input_ids=ids, attention_mask=attention).logits.shape == shape
    assert model.config.max_position_embeddings >= 12 and model.config.intermediate_size == 64
    assert args["input_shape"] == [12]


def test_bert_base_returns_hidden_states():
    model, _ = build_model("builtin:bert", {"vocab_size": 50, "task": "base", "layers": 1, "hidden": 16, "heads": 2},
                           INFO, "recipe.teacher")
    ids, attention = _batch()
    assert model(input_ids=ids, attention_mask=attention).last_hidden_state.shape == (4, 12, 16)


@pytest.mark.parametrize("name", ["bert", "bilstm", "textcnn"])
def test_missing_vocab_size_names_the_argument(name):
    with pytest.raises(RecipeError, match=r"recipe.student.args: .*vocab_size"):
        build_model(f"builtin:{name}", {}, INFO, "recipe.student")


def test_bad_bert_args():
    with pytest.raises(RecipeError, match="unknown task 'regression'"):
        build_model("builtin:bert", {"vocab_size": 50, "task": "regression"}, INFO, "recipe.teacher")
    with pytest.raises(RecipeError, match="masked_lm predicts vocab_size"):
        build_model("builtin:bert", {"vocab_size": 50, "task": "masked_lm"}, INFO, "recipe.teacher")


def test_tiny_bert_learns_stdlib_topics():
    """A 1-layer BERT, 150 Adam steps on text:stdlib_topics: clearly above the majority class (about 25 %)."""
    from kdforge.data.text import stdlib_topics

    torch.manual_seed(0)
    bundle, _ = stdlib_topics(vocab_size=1000, seq_len=32)
    model, _ = build_model("builtin:bert", {"vocab_size": 1000, "layers": 1, "hidden": 64, "heads": 2,
                                            "dropout": 0.0}, bundle.info, "recipe.teacher")
    train, test = bundle.teacher_train.tensors, bundle.test.tensors
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        rows = torch.randint(0, len(train["labels"]), (32,), generator=g)
        out = model(input_ids=train["input_ids"][rows], attention_mask=train["attention_mask"][rows],
                    labels=train["labels"][rows])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=test["input_ids"], attention_mask=test["attention_mask"]).logits
    majority = torch.bincount(test["labels"]).max().item() / len(test["labels"])
    accuracy = (logits.argmax(-1) == test["labels"]).float().mean().item()
    assert accuracy > majority + 0.2, (accuracy, majority)
