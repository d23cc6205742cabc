"""evaluate_pair on image inputs (Grad-CAM++ for both models), options, and sections that cannot run."""

import pytest
import torch
from torch import nn

from kdforge.data.tensors import TensorData
from kdforge.errors import KDForgeError
from kdforge.evaluate import EvalOptions, evaluate_pair
from kdforge.metrics import clopper_pearson, gradcam_plus_plus, rank_correlation, top1_agreement


def conv_net(width: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(width * 4 * 4, 3))


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(0)
    return TensorData({"x": torch.rand(40, 1, 8, 8, generator=g), "labels": torch.randint(0, 3, (40,), generator=g)})


FAST = EvalOptions(explain_samples=8, latency_batch_sizes=(1, 4), latency_repeats=2, latency_warmup=0)


def test_image_pair_has_gradcam_for_both(images):
    teacher, student = conv_net(8), conv_net(2)
    result = evaluate_pair(teacher, student, images, ["x"], ["x"], FAST)
    s = result.sections
    agree, n = top1_agreement(result.teacher_logits, result.student_logits)
    assert s["fidelity"]["agreement"] == agree / n
    assert (s["fidelity"]["agreement_lower"], s["fidelity"]["agreement_upper"]) == clopper_pearson(agree, n)
    cam = s["explanations"]["gradcam_pp"]
    assert cam["available"] and cam["teacher_layer"] == "2" and cam["student_layer"] == "2"
    x = images.tensors["x"][s["explanations"]["rows"]]
    target = result.teacher_logits[s["explanations"]["rows"]].argmax(1)
    expected = rank_correlation(gradcam_plus_plus(teacher, teacher, x, "2", target),
                                gradcam_plus_plus(student, student, x, "2", target))
    valid = expected[~torch.isnan(expected)]
    assert cam["rank_correlation"] == pytest.approx(valid.mean().item(), abs=1e-9)
    assert result.maps["gradcam_teacher"].shape == (8, 8, 8)
    assert [a["batch_size"] for a in s["cost"]["teacher"]["latency"]] == [1, 4]
    assert s["cost"]["params_ratio"] == pytest.approx(sum(p.numel() for p in teacher.parameters())
                                                      / sum(p.numel() for p in student.parameters()))
    assert s["robustness"]["perturbation"] == ["gaussian_noise"]


def test_identical_models_agree_fully(images):
    model = conv_net(4)
    s = evaluate_pair(model, model, images, ["x"], ["x"], FAST, measure_cost=False).sections
    assert s["fidelity"]["agreement"] == 1.0 and s["fidelity"]["kl"] == pytest.approx(0.0, abs=1e-12)
    assert s["fidelity"]["probability_loyalty"] == pytest.approx(1.0, abs=1e-6)
    assert s["explanations"]["gradcam_pp"]["rank_correlation"] == pytest.approx(1.0)
    assert s["robustness"]["agreement_perturbed"]["rate"] == 1.0
    assert "cost" not in s


class ReplayOnly(nn.Module):
    """A teacher that knows only the rows it has seen (like a cache replay): perturbed inputs fail."""

    def __init__(self, x: torch.Tensor, logits: torch.Tensor):
        super().__init__()
        self.x, self.logits = x, logits
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        rows = [int((self.x == row).flatten(1).all(1).nonzero()[0]) for row in x]
        return self.logits[rows]


def test_sections_that_cannot_run_say_why(images):
    student = conv_net(2)
    teacher = ReplayOnly(images.tensors["x"], torch.randn(40, 3))
    s = evaluate_pair(teacher, student, images, ["x"], ["x"], FAST).sections
    assert s["fidelity"]["n"] == 40
    assert s["robustness"]["available"] is False and "IndexError" in s["robustness"]["reason"]


def test_bad_options_and_unlabelled_data():
    with pytest.raises(KDForgeError, match="--epsilon must be in"):
        EvalOptions(epsilon=0.0)
    with pytest.raises(KDForgeError, match="no 'labels'"):
        evaluate_pair(nn.Linear(2, 2), nn.Linear(2, 2), TensorData({"x": torch.zeros(3, 2)}), ["x"], ["x"])


class TinyLM(nn.Module):
    """Embedding -> linear head: (B, T) token ids to (B, T, V) logits."""

    def __init__(self, vocab: int = 12, dim: int = 6):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, input_ids):
        return self.head(self.embed(input_ids))


def test_sequence_logits_are_compared_per_unmasked_position():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 12, (10, 7), generator=g)
    mask = torch.ones(10, 7, dtype=torch.long)
    mask[:, 5:] = 0  # two padding positions per row
    labels = torch.randint(0, 12, (10, 7), generator=g)
    data = TensorData({"input_ids": ids, "attention_mask": mask, "labels": labels})
    teacher, student = TinyLM(), TinyLM()
    result = evaluate_pair(teacher, student, data, ["input_ids"], ["input_ids"], FAST, measure_cost=False)
    s = result.sections
    keep = mask.bool()
    agree, n = top1_agreement(result.teacher_logits[keep], result.student_logits[keep])
    assert s["fidelity"]["n"] == n == 50 and s["fidelity"]["agreement"] == agree / n
    assert s["accuracy"]["student"]["n"] == 50
    assert len(s["confusion"]["matrix"]) == 12 and sum(map(sum, s["confusion"]["matrix"])) == 50
    assert s["explanations"]["available"] is False
    assert s["robustness"]["perturbation"] == ["token_dropout"]
    assert s["robustness"]["agreement_clean"]["rate"] == agree / n


def test_many_classes_leave_out_confusion_and_per_class():
    x = torch.randn(20, 4)
    data = TensorData({"x": x, "labels": torch.randint(0, 300, (20,))})
    s = evaluate_pair(nn.Linear(4, 300), nn.Linear(4, 300), data, ["x"], ["x"], FAST, measure_cost=False).sections
    assert "confusion" not in s and "per_class" not in s and "calibration" in s
