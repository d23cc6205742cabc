"""Encoder students built from a teacher, sentence pooling and tokenised batches (tiny random BERTs, no downloads)."""

import pytest
import torch

from kdforge.errors import KDForgeError
from kdforge.models.hf_student import (
    SentenceEncoder,
    choose_layers,
    pool_hidden,
    student_from_teacher,
    tokenize_sentences,
)

transformers = pytest.importorskip("transformers")


def tiny_bert(cls=None, layers=4, **kw):
    config = transformers.BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32, **kw)
    return (cls or transformers.BertModel)(config).eval()


def test_choose_layers():
    assert choose_layers(6, "every_other") == [0, 2, 4]
    assert choose_layers(6, 2) == [2, 5]
    assert choose_layers(12, 4) == [2, 5, 8, 11]
    assert choose_layers(6, [0, 5]) == [0, 5]
    for bad, match in [([5, 0], "increasing"), ([0, 6], "out of range"), ([], "empty"), (7, "between 1"),
                       ("odd", "unknown")]:
        with pytest.raises(ValueError, match=match):
            choose_layers(6, bad)


def test_student_copies_embeddings_and_the_chosen_layers():
    teacher = tiny_bert(layers=4)
    student = student_from_teacher(teacher, [1, 3])
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    t, s = teacher.state_dict(), student.state_dict()
    assert torch.equal(s["embeddings.word_embeddings.weight"], t["embeddings.word_embeddings.weight"])
    for i, j in [(0, 1), (1, 3)]:
        for key in [k for k in t if k.startswith(f"encoder.layer.{j}.")]:
            assert torch.equal(s[key.replace(f"layer.{j}.", f"layer.{i}.")], t[key]), key
    # copies, not shared storage: training the student leaves the teacher as it was
    s["embeddings.word_embeddings.weight"].add_(1.0)
    assert not torch.equal(teacher.embeddings.word_embeddings.weight, student.embeddings.word_embeddings.weight)


def test_student_with_all_layers_computes_the_teachers_function():
    teacher = tiny_bert(transformers.BertForSequenceClassification, layers=3, num_labels=3)
    student = student_from_teacher(teacher, [0, 1, 2]).eval()
    ids = torch.randint(0, 60, (2, 7))
    assert torch.allclose(student(input_ids=ids).logits, teacher(input_ids=ids).logits, atol=1e-6)


def test_student_of_every_other_layer_equals_running_those_teacher_layers():
    """Independent computation: the teacher's embeddings, then its layers 0 and 2, then the pooler."""
    teacher = tiny_bert(layers=4)
    student = student_from_teacher(teacher, "every_other").eval()
    ids = torch.randint(0, 60, (3, 5))
    with torch.no_grad():
        h = teacher.embeddings(input_ids=ids)
        for j in (0, 2):
            out = teacher.encoder.layer[j](h)
            h = out[0] if isinstance(out, tuple) else out
        assert torch.allclose(student(input_ids=ids).last_hidden_state, h, atol=1e-5)


def test_other_encoder_families():
    config = transformers.DistilBertConfig(vocab_size=60, dim=16, n_layers=4, n_heads=2, hidden_dim=32,
                                           max_position_embeddings=32)
    teacher = transformers.DistilBertModel(config).eval()
    student = student_from_teacher(teacher, 2)
    assert len(student.transformer.layer) == 2
    assert torch.equal(student.transformer.layer[1].ffn.lin1.weight, teacher.transformer.layer[3].ffn.lin1.weight)


def test_not_a_transformer_is_a_clear_error():
    with pytest.raises(KDForgeError, match="num_hidden_layers"):
        student_from_teacher(torch.nn.Linear(2, 2))


def test_pool_hidden_mean_ignores_padding_and_cls_takes_the_first_token():
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(pool_hidden(h, mask, "mean"), torch.tensor([[2.0, 3.0]]))
    assert torch.equal(pool_hidden(h, mask, "cls"), torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="pooling"):
        pool_hidden(h, mask, "max")


def test_sentence_encoder_is_padding_invariant_and_normalised():
    enc = SentenceEncoder(tiny_bert(layers=1))
    short = enc(torch.tensor([[2, 5, 7]]), torch.tensor([[1, 1, 1]]))
    padded = enc(torch.tensor([[2, 5, 7, 0, 0]]), torch.tensor([[1, 1, 1, 0, 0]]))
    assert torch.allclose(short, padded, atol=1e-5)
    assert torch.allclose(short.norm(dim=-1), torch.ones(1))


class _ToyTokenizer:
    def __call__(self, texts, padding, truncation, max_length, return_tensors):
        ids = [[1 + len(w) for w in t.split()][:max_length] for t in texts]
        width = max(map(len, ids))
        return {"input_ids": torch.tensor([x + [0] * (width - len(x)) for x in ids]),
                "attention_mask": torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])}


def test_tokenize_sentences_builds_a_dict_batch():
    batch = tokenize_sentences(_ToyTokenizer(), ["a bb ccc", "dddd"], labels=torch.tensor([1, 0]))
    assert batch["input_ids"].tolist() == [[2, 3, 4], [5, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["mask"].tolist() == [[True, True, True], [True, False, False]]
    assert batch["index"].tolist() == [0, 1] and batch["labels"].tolist() == [1, 0]
    with pytest.raises(ValueError, match="rows"):
        tokenize_sentences(_ToyTokenizer(), ["a b"], labels=torch.tensor([1, 0]))


def test_pkd_skip_on_cls_states_of_hf_encoder_layers():
    """PKD-Skip (Sun et al. 2019) on a tiny BERT: BertLayer returns a tuple in some transformers versions, and
    the capture takes its first tensor, the (B, T, D) hidden states, whose [CLS] token PKD compares."""
    from kdforge.losses.pkd import PKDLoss
    from tests.encoders_kit import distil, tiny_mlm

    teacher = tiny_mlm(layers=6).eval()
    student = tiny_mlm(layers=2, seed=1)
    loss = PKDLoss(pairs={"map": "skip", "student": ["s0", "s1"], "teacher": [f"t{i}" for i in range(6)]})
    assert loss.pairs == [("s0", "t1"), ("s1", "t3")]  # every other teacher layer, leaving the last out
    values = distil(teacher, student, loss, {f"s{i}": f"bert.encoder.layer.{i}" for i in range(2)},
                    {f"t{i}": f"bert.encoder.layer.{i}" for i in range(6)}, steps=25)
    assert values[-1] < 0.5 * values[0]


def test_hf_student_model_spec_builds_and_rebuilds_a_saved_student(tmp_path):
    """`student: {model: "hf_student:<teacher folder>", args: {task: ..., layers: [...]}}` in a recipe."""
    from kdforge.errors import RecipeError
    from kdforge.models import build_model, load_saved_model, save_model

    teacher = tiny_bert(transformers.BertForSequenceClassification, layers=4, num_labels=3)
    teacher.save_pretrained(tmp_path / "teacher")
    args = {"task": "sequence_classification", "layers": [1, 3]}
    student, used = build_model("hf_student:teacher", args, None, "recipe.student", base_dir=tmp_path)
    assert student.config.num_hidden_layers == 2 and used == args
    assert torch.equal(student.bert.encoder.layer[1].output.dense.weight,
                       teacher.bert.encoder.layer[3].output.dense.weight)
    with torch.no_grad():
        student.classifier.weight.add_(1.0)  # "training"
    save_model(student, tmp_path / "student", "hf_student:" + str(tmp_path / "teacher"), used, ["input_ids"])
    again, _ = load_saved_model(tmp_path / "student", "recipe.student")
    assert torch.equal(again.classifier.weight, student.classifier.weight)
    with pytest.raises(RecipeError, match="args.layers"):
        build_model("hf_student:teacher", {"task": "sequence_classification", "layers": [3, 1]}, None,
                    "recipe.student", base_dir=tmp_path)
