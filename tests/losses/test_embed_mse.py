"""embed_mse: sentence-embedding distillation (Reimers & Gurevych 2020), monolingual and multilingual."""

import pytest
import torch

from kdforge.errors import ShapeMismatchError
from kdforge.losses import LOSSES, Outputs, Targets, WeightedSum
from kdforge.losses.embed_mse import EmbedMSELoss
from kdforge.train.module import DistillModule, OnlineTeacher


def test_registered():
    assert LOSSES.get("embed_mse") is EmbedMSELoss


def test_hand_value():
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    # squares 1, 0, 0, 4 -> mean 5/4
    assert EmbedMSELoss()(Outputs(logits=s), Outputs(logits=t), Targets()).item() == pytest.approx(1.25)


def test_translation_term_is_added():
    s, tr, t = torch.zeros(1, 2), torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    loss = EmbedMSELoss(translation="tr")(Outputs(logits=s, features={"tr": tr}), Outputs(logits=t), Targets())
    assert loss.item() == pytest.approx(1.0 + 1.0)  # mse(s, t) = 1, mse(tr, t) = (1 + 1) / 2 = 1
    assert EmbedMSELoss(translation="tr").required_taps() == ({"tr"}, set())


def test_width_mismatch_needs_a_projector():
    s, t = Outputs(logits=torch.randn(3, 4)), Outputs(logits=torch.randn(3, 8))
    with pytest.raises(ShapeMismatchError, match="projector: linear"):
        EmbedMSELoss()(s, t, Targets())
    loss = EmbedMSELoss(projector="linear")
    assert loss(s, t, Targets()).dim() == 0 and loss.proj.layer.weight.shape == (8, 4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="projector"):
        EmbedMSELoss(projector="mlp")
    with pytest.raises(ValueError, match="translation"):
        EmbedMSELoss(translation="")


def test_tiny_bert_student_learns_the_teachers_embeddings_monolingual_and_multilingual():
    transformers = pytest.importorskip("transformers")
    from kdforge.models.hf_student import SentenceEncoder, student_from_teacher

    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16)
    torch.manual_seed(0)
    bert = transformers.BertModel(config).eval()
    teacher = OnlineTeacher(SentenceEncoder(bert), ["input_ids", "attention_mask"])
    student = SentenceEncoder(student_from_teacher(bert, "every_other"))
    ids = torch.randint(1, 40, (16, 6))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             # the "translation": the same sentence in another vocabulary (token ids shifted), which only the
             # student sees
             "pair_input_ids": (ids + 7) % 40, "pair_attention_mask": torch.ones_like(ids)}
    loss = WeightedSum({"embed_mse": EmbedMSELoss(translation="pair")}, {"embed_mse": 1.0})
    module = DistillModule(student, loss, list(batch), taps={"pair": "pair_embedding"})
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    values = []
    for _ in range(40):
        terms = module(batch, teacher(batch))
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        values.append(terms["loss"].item())
    assert values[-1] < 0.2 * values[0]
    with torch.no_grad():
        t_emb = teacher.model(ids, torch.ones_like(ids))
        s_pair = student.eval()(batch["pair_input_ids"], batch["pair_attention_mask"])
        assert torch.nn.functional.cosine_similarity(s_pair, t_emb).mean() > 0.95
