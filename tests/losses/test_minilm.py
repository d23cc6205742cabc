"""minilm: MiniLM / MiniLMv2 self-attention and relation distillation (Wang et al. 2020, 2021)."""

import pytest
import torch
from tests.encoders_kit import distil, text_batch, tiny_mlm

from kdforge.errors import ShapeMismatchError
from kdforge.losses import Outputs, Targets
from kdforge.losses.minilm import MiniLMLoss, relation_log_probs

V1 = {"relations": ["qk", "vv"]}
V2 = {"relations": ["qq", "kk", "vv"]}
TAPS = {"q": "q", "k": "k", "v": "v"}


def test_qk_relation_is_the_models_own_attention_distribution():
    """Independent check: softmax(Q Kᵀ / sqrt(d)) from the query/key taps equals the attention probabilities an
    eager BERT returns with output_attentions=True (padding included)."""
    from kdforge.capture import Capture

    model = tiny_mlm(layers=2, attn_implementation="eager").eval()
    batch = text_batch()
    cap = Capture(model, {"q": "bert.encoder.layer.1.attention.self.query",
                          "k": "bert.encoder.layer.1.attention.self.key"})
    with torch.no_grad(), cap:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_attentions=True)
    probs = relation_log_probs(cap.features["q"], cap.features["k"], 2, batch["mask"], "test").exp()
    assert torch.allclose(probs, out.attentions[1], atol=1e-5)


def _kl_by_hand(s, t, heads, rel):
    """Loops over samples, heads and query rows; no masking."""
    total, count = 0.0, 0
    for b in range(s["q"].shape[0]):
        for h in range(heads):
            d = s["q"].shape[-1] // heads
            dt = t["q"].shape[-1] // heads
            xs, ys = s[rel[0]][b, :, h * d:(h + 1) * d], s[rel[1]][b, :, h * d:(h + 1) * d]
            xt, yt = t[rel[0]][b, :, h * dt:(h + 1) * dt], t[rel[1]][b, :, h * dt:(h + 1) * dt]
            ps = torch.softmax(xs @ ys.T / d**0.5, dim=-1)
            pt = torch.softmax(xt @ yt.T / dt**0.5, dim=-1)
            for i in range(ps.shape[0]):
                total += float((pt[i] * (pt[i].log() - ps[i].log())).sum())
                count += 1
    return total / count


@pytest.mark.parametrize("spec,heads", [(V1, 2), (V2, 4)])
def test_hand_value(spec, heads):
    g = torch.Generator().manual_seed(3)
    s = {r: torch.randn(2, 5, 8, generator=g) for r in "qkv"}
    t = {r: torch.randn(2, 5, 16, generator=g) for r in "qkv"}
    loss = MiniLMLoss(student=TAPS, teacher=TAPS, heads=heads, **spec)(
        Outputs(features=s), Outputs(features=t), Targets())
    expected = sum(_kl_by_hand(s, t, heads, rel) for rel in spec["relations"])
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_padded_tokens_do_not_count():
    g = torch.Generator().manual_seed(4)
    s = {r: torch.randn(1, 4, 8, generator=g) for r in "qkv"}
    t = {r: torch.randn(1, 4, 8, generator=g) for r in "qkv"}
    mask = torch.tensor([[True, True, True, False]])
    loss = MiniLMLoss(student=TAPS, teacher=TAPS, heads=2, **V1)
    full = loss(Outputs(features=s), Outputs(features=t), Targets(mask=mask))
    cut = loss(Outputs(features={r: x[:, :3] for r, x in s.items()}),
               Outputs(features={r: x[:, :3] for r, x in t.items()}), Targets())
    assert full.item() == pytest.approx(cut.item(), rel=1e-5)


def test_head_count_mismatch_and_bad_arguments_are_clear_errors():
    s = Outputs(features={r: torch.randn(2, 5, 12) for r in "qkv"})
    t = Outputs(features={r: torch.randn(2, 5, 16) for r in "qkv"})
    with pytest.raises(ShapeMismatchError, match="head-count mismatch"):
        MiniLMLoss(student=TAPS, teacher=TAPS, heads=8, **V2)(s, t, Targets())
    with pytest.raises(ShapeMismatchError, match="different tokens"):
        MiniLMLoss(student=TAPS, teacher=TAPS, heads=4, **V2)(
            s, Outputs(features={r: torch.randn(2, 6, 16) for r in "qkv"}), Targets())
    with pytest.raises(ValueError, match="two letters"):
        MiniLMLoss(student=TAPS, teacher=TAPS, relations=["qx"])
    with pytest.raises(ValueError, match="missing"):
        MiniLMLoss(student={"q": "q"}, teacher=TAPS, relations=["qk"])
    with pytest.raises(ValueError, match="heads"):
        MiniLMLoss(student=TAPS, teacher=TAPS, heads=0)
    assert MiniLMLoss(student={"v": "sv"}, teacher={"v": "tv"}, relations=["vv"]).required_taps() == ({"sv"}, {"tv"})


def _taps(prefix, layer):
    names = {"q": "query", "k": "key", "v": "value"}
    return {r: f"{prefix}.{layer}.attention.self.{name}" for r, name in names.items()}


@pytest.mark.parametrize("spec,student_width,heads", [(V1, 16, 2), (V2, 8, 4)])
def test_trains_the_last_layer_of_a_tiny_bert_student(spec, student_width, heads):
    teacher = tiny_mlm(layers=4).eval()
    student = tiny_mlm(layers=2, hidden=student_width, heads=2 if student_width == 16 else 1, seed=1)
    taps_s, taps_t = _taps("bert.encoder.layer", 1), _taps("bert.encoder.layer", 3)
    loss = MiniLMLoss(student={r: f"s{r}" for r in "qkv"}, teacher={r: f"t{r}" for r in "qkv"}, heads=heads, **spec)
    values = distil(teacher, student, loss, {f"s{r}": p for r, p in taps_s.items()},
                    {f"t{r}": p for r, p in taps_t.items()}, steps=30)
    assert values[-1] < 0.5 * values[0]
