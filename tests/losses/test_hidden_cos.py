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
