"""fused_token_kd: the registered step on real transformers models equals token_kd on their logits, no full
(tokens x vocabulary) tensor is made, the model's soft cap comes from its config, and what the fused path cannot
do is refused at preflight. Value/gradient parity on every option: tests/losses/test_parity.py."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from kdforge.app.build import build_loss
from kdforge.app.preflight import preflight
from kdforge.errors import RecipeError
from kdforge.llm.data import encode, tiny_causal_lm, train_tokenizer
from kdforge.losses import LOSSES
from kdforge.losses.base import Outputs, Targets
from kdforge.losses.fused_linear import FusedTokenKDLoss, LinearHead, fused_linear_step, head_transform
from kdforge.recipe import LossTerm
from kdforge.train.module import DistillModule, OnlineTeacher, standard_step

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Return the list of names in this module.",
         "A tiny corpus is enough for a tokenizer test."] * 3
INPUTS = ["input_ids", "attention_mask"]
VOCAB = 300


def data():
    return encode(TEXTS, train_tokenizer(TEXTS, VOCAB), seq_len=20)


def gemma2(vocab: int, softcap: float | None, seed: int):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(seed)
    config = Gemma2Config(num_hidden_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                          num_key_value_heads=2, head_dim=16, vocab_size=vocab, final_logit_softcapping=softcap,
                          max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return Gemma2ForCausalLM(config)


def step_terms(name, student, teacher, batch, step, **args):
    module = DistillModule(student, build_loss([LossTerm(name=name, **args)]), INPUTS, {})
    source = OnlineTeacher(teacher, INPUTS, {})
    terms = step(module, source, batch)
    terms["loss"].backward()
    grads = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}
    student.zero_grad(set_to_none=True)
    return terms, grads


@pytest.mark.parametrize(("arch", "args"), [
    ("llama", {"divergence": "jsd", "beta": 0.3, "temperature": 2.0}),
    ("gpt2", {"divergence": "reverse_kl", "vocab_size": 290}),
])
def test_the_fused_step_equals_token_kd_on_the_models_logits(arch, args):
    batch = data()[slice(0, 6)]
    student = tiny_causal_lm(arch, layers=1, hidden=32, heads=2, vocab_size=VOCAB).double().eval()  # no dropout
    teacher = tiny_causal_lm("llama", layers=1, hidden=48, heads=2, vocab_size=VOCAB, seed=1).double()
    want, want_grads = step_terms("token_kd", student, teacher, batch, standard_step, **args)
    got, got_grads = step_terms("fused_token_kd", student, teacher, batch, fused_linear_step(standard_step),
                                chunk_size=7, **args)
    assert float(got["loss"].detach()) == pytest.approx(float(want["loss"].detach()), rel=1e-10)
    assert set(got_grads) == set(want_grads)
    for name in want_grads:
        torch.testing.assert_close(got_grads[name], want_grads[name], rtol=1e-8, atol=1e-12)
    assert type(student.forward(batch["input_ids"])).__name__ != "LinearHead"  # the step put the model back


def test_a_gemma2_soft_cap_is_read_from_the_config_and_applied():
    batch = data()[slice(0, 4)]
    student, teacher = gemma2(VOCAB, 3.0, seed=0).double(), gemma2(VOCAB, 3.0, seed=1).double()
    assert head_transform(student.config) == (3.0, 1.0)
    want, _ = step_terms("token_kd", student, teacher, batch, standard_step, divergence="tv")
    got, _ = step_terms("fused_token_kd", student, teacher, batch, fused_linear_step(standard_step),
                        divergence="tv")
    assert float(got["loss"].detach()) == pytest.approx(float(want["loss"].detach()), rel=1e-10)
    student.config.final_logit_softcapping = None  # the fused head without the cap computes another value
    uncapped, _ = step_terms("fused_token_kd", student, teacher, batch, fused_linear_step(standard_step),
                             divergence="tv")
    assert abs(float(uncapped["loss"].detach()) - float(want["loss"].detach())) > 1e-6


class LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_no_full_logits_exist_in_forward_or_backward():
    n, hidden, vocab = 64, 8, 1000
    g = torch.Generator().manual_seed(0)
    h = torch.randn(n, hidden, generator=g, requires_grad=True)
    w = torch.randn(vocab, hidden, generator=g, requires_grad=True)
    t_h, t_w = torch.randn(n, hidden, generator=g), torch.randn(vocab, hidden, generator=g)
    loss = FusedTokenKDLoss(divergence="jsd", chunk_size=8)
    with LargestTensor() as seen:
        value = loss(Outputs(logits=LinearHead(h, w)), Outputs(logits=LinearHead(t_h, t_w)), Targets())
        value.backward()
    assert seen.largest <= max(8 * vocab, vocab * hidden)  # one chunk's logits, or the weight's own gradient
    assert h.grad is not None and w.grad is not None


def test_bfloat16_inputs_match_float64_within_bfloat16_rounding():
    g = torch.Generator().manual_seed(1)
    h, w = torch.randn(40, 16, generator=g, dtype=torch.float64), torch.randn(50, 16, generator=g, dtype=torch.float64)
    t = torch.randn(40, 50, generator=g, dtype=torch.float64)
    results = []
    for dtype in (torch.float64, torch.bfloat16):
        hd, wd = h.to(dtype).clone().requires_grad_(True), w.to(dtype).clone().requires_grad_(True)
        value = FusedTokenKDLoss(divergence="jsd", chunk_size=4)(Outputs(logits=LinearHead(hd, wd)),
                                                                 Outputs(logits=t.to(dtype)), Targets())
        value.backward()
        assert hd.grad.dtype == wd.grad.dtype == dtype
        results.append((value.double(), hd.grad.double(), wd.grad.double()))
    (v64, h64, w64), (v16, h16, w16) = results
    assert float(v16.detach()) == pytest.approx(float(v64.detach()), rel=3e-2)
    torch.testing.assert_close(w16, w64, rtol=5e-2, atol=5e-2 * float(w64.abs().max()))
    torch.testing.assert_close(h16, h64, rtol=5e-2, atol=5e-2 * float(h64.abs().max()))


def test_backward_twice_is_refused():
    h, w = torch.randn(4, 3, requires_grad=True), torch.randn(9, 3, requires_grad=True)
    value = FusedTokenKDLoss(chunk_size=2)(Outputs(logits=LinearHead(h, w)), Outputs(logits=torch.randn(4, 9)),
                                           Targets())
    value.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="twice"):
        value.backward()


def test_it_is_registered_with_its_step():
    assert LOSSES.info("fused_token_kd").step is fused_linear_step


def prepared(student, teacher, *terms):
    module = DistillModule(student, build_loss([LossTerm(**term) for term in terms]), INPUTS, {})
    return module, OnlineTeacher(teacher, INPUTS, {})


def test_preflight_refuses_a_model_whose_logits_are_not_its_fused_head():
    student = tiny_causal_lm("gpt2", layers=1, hidden=32, heads=2, vocab_size=VOCAB)
    student.config.logit_scale = 3.0  # the config claims a scale GPT-2's forward never applies
    module, teacher = prepared(student, tiny_causal_lm("gpt2", layers=1, hidden=32, heads=2, vocab_size=VOCAB),
                               {"name": "fused_token_kd"})
    with pytest.raises(RecipeError, match=r"fused_token_kd.*student's logits differ.*Use token_kd"):
        preflight(module, teacher, data(), (set(), set()))


def test_preflight_refuses_a_model_without_decoder_and_head():
    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(VOCAB, VOCAB)

        def forward(self, input_ids, attention_mask=None):
            return self.emb(input_ids)

    module, teacher = prepared(Plain(), tiny_causal_lm("gpt2", layers=1, hidden=32, heads=2, vocab_size=VOCAB),
                               {"name": "fused_token_kd"})
    with pytest.raises(RecipeError, match="get_decoder.*get_output_embeddings.*Use token_kd"):
        preflight(module, teacher, data(), (set(), set()))


def test_preflight_refuses_terms_that_read_the_logits_the_fused_step_never_builds():
    module, teacher = prepared(tiny_causal_lm("gpt2", layers=1, hidden=32, heads=2, vocab_size=VOCAB),
                               tiny_causal_lm("gpt2", layers=1, hidden=32, heads=2, vocab_size=VOCAB),
                               {"name": "fused_token_kd"}, {"name": "ce"})
    with pytest.raises(RecipeError, match=r"never built.*\['ce'\].*token_kd"):
        preflight(module, teacher, data(), (set(), set()))


def test_the_shipped_recipe_trains_with_fused_token_kd_through_its_step(tmp_path, monkeypatch):
    from pathlib import Path

    import yaml

    import kdforge.losses.fused_linear as fused
    from kdforge.app.run import run_recipe
    from kdforge.recipe import recipe_from_dict

    recipe_path = Path(__file__).resolve().parents[2] / "recipes" / "fused_token_kd" / "stdlib_gpt2_from_gpt2.yaml"
    calls = []
    made = fused.head_of
    monkeypatch.setattr(fused, "head_of", lambda *a, **k: calls.append(1) or made(*a, **k))
    spec = yaml.safe_load(recipe_path.read_text())
    spec["data"]["args"] = {"limit": 120, "vocab_size": 300, "seq_len": 20}
    for side in ("teacher", "student"):
        spec[side]["args"].update({"layers": 1, "hidden": 32, "vocab_size": 300})
    spec["teacher"]["train"].update({"max_steps": 2, "batch_size": 8})
    spec["train"].update({"max_steps": 2, "batch_size": 8})
    assert [term["name"] for term in spec["losses"]] == ["fused_token_kd"]
    spec["baseline"] = False
    run_recipe(recipe_from_dict(spec, base_dir=recipe_path.parent), out_dir=tmp_path / "run")
    assert len(calls) >= 4  # student and teacher heads on each of the 2 optimizer steps
    assert (tmp_path / "run" / "seed-0" / "student" / "model.safetensors").is_file()



@pytest.mark.parametrize("name", ["token_kd", "fused_token_kd"])
def test_a_second_backward_through_one_chunked_value_is_refused(name):
    """The chunked paths hand their gradient buffers on once (`token_kd.hand_on`), scaled in place."""
    from kdforge.losses.token_kd import hand_on

    class Ctx:
        grads = (torch.ones(2), None)

    ctx = Ctx()
    buffer = ctx.grads[0]
    first = hand_on(ctx, torch.tensor(2.0), name)
    assert torch.equal(first[0], torch.full((2,), 2.0)) and first[1] is None
    assert first[0] is buffer  # scaled in place: no copy of a (rows x vocabulary) buffer
    with pytest.raises(RuntimeError, match=f"{name}: backward through the same loss value twice"):
        hand_on(ctx, torch.tensor(1.0), name)
