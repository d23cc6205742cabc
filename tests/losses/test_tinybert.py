"""tinybert: TinyBERT embedding, hidden-state and attention-score distillation (Jiao et al. 2020)."""

import pytest
import torch
from tests.encoders_kit import distil, text_batch, tiny_mlm

from kdforge.errors import ShapeMismatchError
from kdforge.losses import Outputs, Targets
from kdforge.losses.tinybert import TinyBERTLoss, expand_attention_pairs


def _scores_by_hand(q, k, heads, mask):
    """(B, T, D) -> (B, H, T, T) pre-softmax scores, padded rows and columns set to 0, with loops."""
    b, t, d = q.shape
    dh = d // heads
    out = torch.zeros(b, heads, t, t)
    for n in range(b):
        for h in range(heads):
            for i in range(t):
                for j in range(t):
                    if mask[n, i] and mask[n, j]:
                        out[n, h, i, j] = q[n, i, h * dh:(h + 1) * dh] @ k[n, j, h * dh:(h + 1) * dh] / dh**0.5
    return out


def test_hand_value_hidden_and_attention():
    g = torch.Generator().manual_seed(5)
    s = {n: torch.randn(2, 4, 8, generator=g) for n in ("h", "q", "k")}
    t = {n: torch.randn(2, 4, 8, generator=g) for n in ("h", "q", "k")}
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    loss = TinyBERTLoss(hidden_pairs=[("h", "h")], attention_pairs=[("q", "k", "q", "k")], heads=2, projector="none")
    got = loss(Outputs(features=s), Outputs(features=t), Targets(mask=mask))
    hidden = ((s["h"] - t["h"]) ** 2).mean()
    att = ((_scores_by_hand(s["q"], s["k"], 2, mask) - _scores_by_hand(t["q"], t["k"], 2, mask)) ** 2).mean()
    assert got.item() == pytest.approx((hidden + att).item(), rel=1e-5)


def test_learned_projection_when_widths_differ():
    s, t = Outputs(features={"h": torch.randn(2, 3, 4)}), Outputs(features={"h": torch.randn(2, 3, 8)})
    loss = TinyBERTLoss(hidden_pairs=[("h", "h")])
    value = loss(s, t, Targets())
    w, b = loss.proj.layer.weight, loss.proj.layer.bias
    assert w.shape == (8, 4)
    assert value.item() == pytest.approx(((s.features["h"] @ w.T + b - t.features["h"]) ** 2).mean().item(), rel=1e-5)
    with pytest.raises(ShapeMismatchError, match="projector: linear"):
        TinyBERTLoss(hidden_pairs=[("h", "h")], projector="none")(s, t, Targets())


def test_layer_maps_and_clear_errors():
    spec = {"map": "uniform", "student": [["sq0", "sk0"], ["sq1", "sk1"]],
            "teacher": [[f"tq{i}", f"tk{i}"] for i in range(4)]}
    assert expand_attention_pairs(spec) == [("sq0", "sk0", "tq1", "tk1"), ("sq1", "sk1", "tq3", "tk3")]
    with pytest.raises(ValueError, match="multiple"):
        expand_attention_pairs({**spec, "teacher": spec["teacher"][:3]})
    with pytest.raises(ValueError, match="four tap names"):
        TinyBERTLoss(attention_pairs=[("q", "k", "q")])
    with pytest.raises(ValueError, match="neither"):
        TinyBERTLoss()
    s = Outputs(features={"q": torch.randn(2, 3, 12), "k": torch.randn(2, 3, 12)})
    t = Outputs(features={"q": torch.randn(2, 3, 16), "k": torch.randn(2, 3, 16)})
    with pytest.raises(ShapeMismatchError, match="head-count mismatch"):
        TinyBERTLoss(attention_pairs=[("q", "k", "q", "k")], heads=8)(s, t, Targets())


def test_trains_a_narrower_tiny_bert_student_with_a_uniform_layer_map():
    teacher = tiny_mlm(layers=4).eval()
    student = tiny_mlm(layers=2, hidden=8, heads=2, seed=1)

    def att(prefix, i):
        return [f"{prefix}.encoder.layer.{i}.attention.self.query", f"{prefix}.encoder.layer.{i}.attention.self.key"]

    s_taps = {"se": "bert.embeddings", **{f"sh{i}": f"bert.encoder.layer.{i}" for i in range(2)}}
    t_taps = {"te": "bert.embeddings", **{f"th{i}": f"bert.encoder.layer.{i}" for i in range(4)}}
    for i in range(2):
        s_taps[f"sq{i}"], s_taps[f"sk{i}"] = att("bert", i)
    for i in range(4):
        t_taps[f"tq{i}"], t_taps[f"tk{i}"] = att("bert", i)
    loss = TinyBERTLoss(
        hidden_pairs={"map": "uniform", "student": ["se", "sh0", "sh1"], "teacher": ["te", "th1", "th3"]},
        attention_pairs={"map": "uniform", "student": [["sq0", "sk0"], ["sq1", "sk1"]],
                         "teacher": [[f"tq{i}", f"tk{i}"] for i in range(4)]},
        heads=2)
    # the uniform map of 3 onto 3 pairs embeddings with embeddings, then student layers 0, 1 with teacher 1, 3
    assert loss.hidden_pairs == [("se", "te"), ("sh0", "th1"), ("sh1", "th3")]
    values = distil(teacher, student, loss, s_taps, t_taps, steps=30, batch=text_batch())
    assert values[-1] < 0.5 * values[0]


def test_preflight_refuses_heads_that_are_not_the_models_head_count():
    from tests.encoders_kit import INPUTS

    from kdforge.app.preflight import preflight
    from kdforge.data.tensors import TensorData
    from kdforge.errors import RecipeError
    from kdforge.losses import WeightedSum
    from kdforge.train.module import DistillModule, OnlineTeacher

    teacher, student = tiny_mlm(layers=2, heads=2), tiny_mlm(layers=1, heads=2, seed=1)
    taps = {"q": "bert.encoder.layer.0.attention.self.query", "k": "bert.encoder.layer.0.attention.self.key"}
    data = TensorData(text_batch())
    for heads, fits in ((2, True), (4, False)):
        loss = TinyBERTLoss(attention_pairs=[("q", "k", "q", "k")], heads=heads)
        module = DistillModule(student, WeightedSum({"tinybert": loss}, {"tinybert": 1.0}), INPUTS, taps)
        source = OnlineTeacher(teacher, INPUTS, taps)
        try:
            if fits:
                preflight(module, source, data, ({"q", "k"}, {"q", "k"}))
            else:
                with pytest.raises(RecipeError, match=r"recipe.losses \(tinybert\): heads is 4 but the student has 2"):
                    preflight(module, source, data, ({"q", "k"}, {"q", "k"}))
        finally:
            source.capture.remove()
            module.capture.remove()
