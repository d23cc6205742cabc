"""hidden_cos: DistilBERT's cosine loss on hidden states (Sanh et al. 2019)."""

import pytest
import torch
from tests.encoders_kit import distil, tiny_mlm

from kdforge.errors import ShapeMismatchError
from kdforge.losses import Outputs, Targets
from kdforge.losses.hidden_cos import HiddenCosLoss


def test_hand_value_with_padding_mask():
    s = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    t = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [-5.0, -5.0]]])
    loss = HiddenCosLoss(pairs=[("s", "t")])
    args = Outputs(features={"s": s}), Outputs(features={"t": t})
    # per token 1 - cos: 0, 1, 2; the third token is padding
    assert loss(*args, Targets(mask=torch.tensor([[True, True, False]]))).item() == pytest.approx(0.5)
    assert loss(*args, Targets()).item() == pytest.approx(1.0)
    # the attention mask (real tokens) wins over a label mask that marks only the masked-LM positions
    only_first = torch.tensor([[True, False, False]])
    assert loss(*args, Targets(mask=only_first)).item() == pytest.approx(0.0)
    assert loss(*args, Targets(mask=only_first, tokens=torch.tensor([[1, 1, 0]]))).item() == pytest.approx(0.5)


def test_matches_torch_cosine_embedding_loss():
    """The authors' code: nn.CosineEmbeddingLoss(target=1) over the real tokens' vectors."""
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(3, 5, 8, generator=g), torch.randn(3, 5, 8, generator=g)
    mask = torch.rand(3, 5, generator=g) > 0.3
    ref = torch.nn.CosineEmbeddingLoss()(s[mask], t[mask], torch.ones(int(mask.sum())))
    got = HiddenCosLoss(pairs=[("s", "t")])(Outputs(features={"s": s}), Outputs(features={"t": t}), Targets(mask=mask))
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)


def test_width_mismatch_is_a_clear_error_and_projector_fixes_it():
    s, t = Outputs(features={"s": torch.randn(2, 3, 4)}), Outputs(features={"t": torch.randn(2, 3, 8)})
    with pytest.raises(ShapeMismatchError, match="projector: linear"):
        HiddenCosLoss(pairs=[("s", "t")])(s, t, Targets())
    assert HiddenCosLoss(pairs=[("s", "t")], projector="linear")(s, t, Targets()).dim() == 0
    with pytest.raises(ValueError, match="projector"):
        HiddenCosLoss(pairs=[("s", "t")], projector="conv")


def test_distilbert_triple_loss_pieces_train_a_tiny_bert_student():
    from kdforge.models.hf_student import student_from_teacher

    teacher = tiny_mlm(layers=4).eval()
    student = student_from_teacher(teacher, "every_other")
    torch.nn.init.normal_(student.bert.encoder.layer[1].output.dense.weight)  # start away from the teacher
    values = distil(teacher, student, HiddenCosLoss(pairs={"map": "uniform", "student": ["s1"], "teacher": ["t3"]}),
                    {"s1": "bert.encoder.layer.1"}, {"t3": "bert.encoder.layer.3"}, steps=25)
    assert values[-1] < 0.5 * values[0]


def test_mlm_mask_follows_bert_80_10_10():
    from kdforge.models.hf_student import mlm_mask

    ids = torch.randint(5, 40, (64, 32))
    am = torch.ones_like(ids)
    am[:, -4:] = 0
    ids[:, 0] = 1  # a special token ([CLS]) that is never chosen
    out = mlm_mask({"input_ids": ids, "attention_mask": am}, mask_token_id=3, vocab_size=40, special_ids=[1],
                   generator=torch.Generator().manual_seed(0))
    chosen = out["mask"]
    assert not chosen[:, 0].any() and not chosen[:, -4:].any()
    assert 0.12 < chosen.float().mean().item() / (27 / 32) < 0.18
    assert torch.equal(out["labels"][chosen], ids[chosen]) and (out["labels"][~chosen] == -100).all()
    assert torch.equal(out["input_ids"][~chosen], ids[~chosen])
    masked = (out["input_ids"][chosen] == 3).float().mean().item()
    assert 0.72 < masked < 0.88


def test_distilbert_triple_loss_on_masked_lm():
    """ce on the MLM labels + kd on the teacher's MLM logits (chosen positions only) + hidden_cos, weights 2, 5, 1
    as in the DistilBERT training script (alpha_mlm, alpha_ce, alpha_cos)."""
    from tests.encoders_kit import INPUTS, text_batch

    from kdforge.losses import WeightedSum
    from kdforge.losses.ce import CELoss
    from kdforge.losses.kd import KDLoss
    from kdforge.models.hf_student import mlm_mask, student_from_teacher
    from kdforge.train.module import DistillModule, OnlineTeacher

    teacher = tiny_mlm(layers=4).eval()
    student = student_from_teacher(teacher, "every_other")
    torch.nn.init.normal_(student.bert.encoder.layer[1].output.dense.weight)  # start away from the teacher
    batch = mlm_mask(text_batch(n=16, t=8), mask_token_id=3, vocab_size=40, probability=0.3,
                     generator=torch.Generator().manual_seed(0))
    terms = {"ce": CELoss(), "kd": KDLoss(temperature=2.0), "hidden_cos": HiddenCosLoss(pairs=[("s", "t")])}
    loss = WeightedSum(terms, {"ce": 2.0, "kd": 5.0, "hidden_cos": 1.0})
    source = OnlineTeacher(teacher, INPUTS, {"t": "bert.encoder.layer.3"})
    module = DistillModule(student.train(), loss, INPUTS, {"s": "bert.encoder.layer.1"})
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    first = module(batch, source(batch))
    for _ in range(20):
        terms = module(batch, source(batch))
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
    assert set(terms) == {"loss", "ce", "kd", "hidden_cos"}
    assert terms["loss"].item() < 0.9 * first["loss"].item()
    assert terms["ce"].item() < first["ce"].item() and terms["hidden_cos"].item() < 0.1
