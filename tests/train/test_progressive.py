"""MobileBERT-style progressive layer-wise transfer (`progressive_steps` on a layer-paired loss term).

Sun et al., "MobileBERT: a Compact Task-Agnostic BERT for Resource-Limited Devices", ACL 2020,
https://arxiv.org/abs/2004.02984 (progressive knowledge transfer, section 3.5).
"""

import math

import pytest
import torch
from accelerate import Accelerator

from kdforge.app.preflight import preflight
from kdforge.data.tensors import TensorData
from kdforge.errors import RecipeError
from kdforge.losses import LOSSES
from kdforge.losses.base import Outputs, PairedFeatureLoss, Targets, WeightedSum
from kdforge.losses.fitnet import FitNetLoss
from kdforge.losses.kd import KDLoss
from kdforge.losses.tinybert import TinyBERTLoss
from kdforge.models.builtin import MLP
from kdforge.recipe import recipe_from_dict
from kdforge.train.config import LoopConfig
from kdforge.train.loop import TrainJob, fit
from kdforge.train.module import DistillModule, OnlineTeacher
from kdforge.train.schedule import TermSchedule

TAPS = {"s0": "blocks.0", "s1": "blocks.1", "s2": "blocks.2"}
TEACHER_TAPS = {"t0": "blocks.0", "t1": "blocks.1", "t2": "blocks.2"}
PAIRS = [("s0", "t0"), ("s1", "t1"), ("s2", "t2")]


def features(names, b=4, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(b, d, generator=g) for name in names}


def test_schedule_boundaries_and_frozen_taps():
    """Stage k alone on [start + kN, start + (k+1)N); inactive before start; all pairs after the last stage."""
    loss = WeightedSum({"fitnet": FitNetLoss(PAIRS, projector="none"), "kd": KDLoss()}, {"fitnet": 1.0, "kd": 1.0})
    schedule = TermSchedule(loss.terms, {"fitnet": (2, None)}, progressive={"fitnet": 4})
    expected = {0: None, 1: None, 2: 0, 5: 0, 6: 1, 9: 1, 10: 2, 13: 2, 14: None, 100: None}
    for step, stage in expected.items():
        assert schedule.stage("fitnet", step) == stage, step
        assert schedule.at(step).stages.get("fitnet") == stage, step
        assert schedule.stage("kd", step) is None and "kd" not in schedule.at(step).stages
    taps = {}
    for step in (0, 2, 6, 10, 14):
        plan = schedule.at(step)
        taps[step] = (plan.frozen, plan.training)
    assert taps[0] == (set(), set())  # before start_step the term is off: nothing frozen
    assert taps[2] == (set(), {"s0"})
    assert taps[6] == ({"s0"}, {"s1"})
    assert taps[10] == ({"s0", "s1"}, {"s2"})
    assert taps[14] == (set(), set())
    schedule.select(loss, 6)
    assert loss.stages == {"fitnet": 1}
    with loss.all_terms():  # preflight: every term with every pair (and it drops no gradient)
        assert loss.stages == {} and loss.active is None
    assert loss.stages == {"fitnet": 1}


def test_total_loss_is_the_active_pairs_term():
    """Independent computation on fixed tensors: the MSE of the one active pair, then the mean of all."""
    s_feats, t_feats = features(["s0", "s1", "s2"], seed=1), features(["t0", "t1", "t2"], seed=2)
    student, teacher = Outputs(features=s_feats), Outputs(features=t_feats)
    loss = WeightedSum({"fitnet": FitNetLoss(PAIRS, projector="none")}, {"fitnet": 2.5})
    schedule = TermSchedule(loss.terms, progressive={"fitnet": 3})
    mse = [((s_feats[s] - t_feats[t]) ** 2).mean().item() for s, t in PAIRS]
    for k in range(3):
        schedule.select(loss, 3 * k + 1)
        out = loss(student, teacher, Targets())
        assert out["fitnet"].item() == pytest.approx(mse[k], rel=1e-6)
        assert out["loss"].item() == pytest.approx(2.5 * mse[k], rel=1e-6)
        assert loss.terms["fitnet"].stage is None  # the stage holds for the call only, not in the term
    schedule.select(loss, 9)
    assert loss(student, teacher, Targets())["loss"].item() == pytest.approx(2.5 * sum(mse) / 3, rel=1e-6)


def test_tinybert_stage_is_one_student_layer():
    """Embedding pair first (stage 0 alone), then each layer's hidden pair plus its attention pair."""
    b, t, d, heads = 2, 5, 8, 2
    names = ["e", "h1", "h2", "q1", "k1", "q2", "k2"]
    g = torch.Generator().manual_seed(0)
    s_feats = {n: torch.randn(b, t, d, generator=g) for n in names}
    t_feats = {n: torch.randn(b, t, d, generator=g) for n in names}
    loss = TinyBERTLoss(hidden_pairs=[["e", "e"], ["h1", "h1"], ["h2", "h2"]],
                        attention_pairs=[["q1", "k1", "q1", "k1"], ["q2", "k2", "q2", "k2"]],
                        heads=heads, projector="none")
    assert loss.layer_stages() == [{"e"}, {"h1", "q1", "k1"}, {"h2", "q2", "k2"}]

    def scores(f, q, k):  # (B, heads, T, T), written out independently of head_scores
        qh = f[q].reshape(b, t, heads, d // heads).transpose(1, 2)
        kh = f[k].reshape(b, t, heads, d // heads).transpose(1, 2)
        return qh @ kh.transpose(-1, -2) / math.sqrt(d // heads)

    def mse(x, y):
        return ((x - y) ** 2).mean().item()

    weighted = WeightedSum({"tinybert": loss}, {"tinybert": 1.0})
    schedule = TermSchedule(weighted.terms, progressive={"tinybert": 1})
    student, teacher = Outputs(features=s_feats), Outputs(features=t_feats)
    expected = [mse(s_feats["e"], t_feats["e"])]
    for i in (1, 2):
        expected.append(mse(s_feats[f"h{i}"], t_feats[f"h{i}"])
                        + mse(scores(s_feats, f"q{i}", f"k{i}"), scores(t_feats, f"q{i}", f"k{i}")))
    for k in range(3):
        schedule.select(weighted, k)
        assert weighted(student, teacher, Targets())["loss"].item() == pytest.approx(expected[k], rel=1e-5)
    schedule.select(weighted, 3)
    assert weighted(student, teacher, Targets())["loss"].item() == pytest.approx(sum(expected), rel=1e-5)


def paired_losses():
    return [name for name in LOSSES.names() if issubclass(LOSSES.get(name), PairedFeatureLoss)]


@pytest.mark.parametrize("name", paired_losses())
def test_every_paired_loss_reads_only_the_active_pair(name):
    """A stage-0 value must not depend on pair 1 at all: pair 1's features are NaN."""
    args = {**LOSSES.info(name).example, "pairs": [("feat", "feat"), ("nan", "nan")]}
    loss = LOSSES.get(name)(**args)
    assert loss.layer_stages() == [{"feat"}, {"nan"}]
    g = torch.Generator().manual_seed(0)
    s = {"feat": torch.randn(4, 8, 4, 4, generator=g), "nan": torch.full((4, 8, 4, 4), math.nan)}
    t = {"feat": torch.randn(4, 8, 4, 4, generator=g), "nan": torch.full((4, 8, 4, 4), math.nan)}
    targets = Targets(labels=torch.tensor([0, 1, 2, 0]), index=torch.arange(4))
    loss.set_stage(0)
    assert torch.isfinite(loss(Outputs(features=s), Outputs(features=t), targets))
    loss.set_stage(None)
    assert not torch.isfinite(loss(Outputs(features=s), Outputs(features=t), targets))


def mlp_job(tmp_path, total_steps=12, **cfg):
    """3-block MLP student and teacher (equal widths), fitnet pairs per block with progressive_steps 3, plus kd."""
    torch.manual_seed(1)
    teacher = MLP(input_shape=(6,), num_classes=2, hidden=(8, 8, 8))
    student = MLP(input_shape=(6,), num_classes=2, hidden=(8, 8, 8))
    loss = WeightedSum({"fitnet": FitNetLoss(PAIRS, projector="none"), "kd": KDLoss(2.0)},
                       {"fitnet": 1.0, "kd": 0.5})
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g)
    data = TensorData({"x": x, "labels": (x[:, 0] > 0).long()})
    config = LoopConfig(batch_size=8, lr=0.01, optimizer="adamw", weight_decay=0.1, progress=False, **cfg)
    module = DistillModule(student, loss, ["x"], TAPS)
    return TrainJob("student", module, OnlineTeacher(teacher, ["x"], TEACHER_TAPS), data, config, total_steps,
                    tmp_path, schedule=TermSchedule(loss.terms, progressive={"fitnet": 3}))


def block(state, i):
    return {k: v for k, v in state.items() if k.startswith(f"student.blocks.{i}.")}


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_layers_below_the_stage_do_not_move_at_all(tmp_path):
    """AdamW with weight decay: frozen blocks stay bit-identical through a stage, the active one changes, and
    after the schedule every block trains."""
    job = mlp_job(tmp_path, total_steps=12)
    before = []  # the module's weights before each optimizer step
    step_fn = job.step_fn

    def recording(module, teacher, batch):
        before.append({k: v.detach().clone() for k, v in job.module.state_dict().items()})
        return step_fn(module, teacher, batch)

    job.step_fn = recording
    fit(job, Accelerator())
    snaps = [*before, {k: v.detach().clone() for k, v in job.module.state_dict().items()}]  # snaps[i]: after i steps
    # stage 1 = steps 3, 4, 5 (snapshots 3 to 6): block 0 frozen, block 1 trains
    assert all(same(block(snaps[3], 0), block(snaps[i], 0)) for i in range(3, 10))  # frozen in stages 1 and 2
    assert all(same(block(snaps[6], 1), block(snaps[i], 1)) for i in range(6, 10))  # frozen in stage 2
    assert not same(block(snaps[3], 1), block(snaps[6], 1))
    assert not same(block(snaps[6], 2), block(snaps[9], 2))
    assert not same(block(snaps[0], 0), block(snaps[3], 0))  # stage 0 trains block 0
    for i in range(3):  # joint phase: everything moves
        assert not same(block(snaps[9], i), block(snaps[12], i)), i
    assert not torch.equal(snaps[3]["student.head.weight"], snaps[9]["student.head.weight"])  # kd is not frozen
    assert job.schedule.apply(job.module, 12) == []  # after the schedule
    assert len(job.schedule.apply(job.module, 6)) == 4  # stage 2: block 0 and block 1 (weight, bias each) held


def test_resume_mid_schedule_continues_the_same_schedule(tmp_path, monkeypatch):
    reference = mlp_job(tmp_path / "a", checkpoint_every=2)
    fit(reference, Accelerator())
    crashing = mlp_job(tmp_path / "b", checkpoint_every=2)
    calls = {"n": 0}
    original = WeightedSum.forward

    def crash_on_step_6(self, *args):
        calls["n"] += 1
        if calls["n"] == 6:  # inside stage 1; the last checkpoint is after step 4
            raise KeyboardInterrupt("simulated kill")
        return original(self, *args)

    monkeypatch.setattr(WeightedSum, "forward", crash_on_step_6)
    with pytest.raises(KeyboardInterrupt):
        fit(crashing, Accelerator())
    monkeypatch.setattr(WeightedSum, "forward", original)
    torch.manual_seed(123)
    resumed = mlp_job(tmp_path / "b", checkpoint_every=2)
    fit(resumed, Accelerator(), resume=True)
    for key, value in reference.module.state_dict().items():
        assert torch.equal(value, resumed.module.state_dict()[key]), key


def test_pairs_listed_top_layer_first_are_refused():
    loss = WeightedSum({"fitnet": FitNetLoss(PAIRS[::-1], projector="none")}, {"fitnet": 1.0})
    schedule = TermSchedule(loss.terms, progressive={"fitnet": 2})
    student = MLP(input_shape=(6,), num_classes=2, hidden=(8, 8, 8))
    with pytest.raises(RecipeError, match=r"bottom layer first.*pair 1 \(student tap 's1'"):
        schedule.check_layer_order(student, TAPS)
    teacher = MLP(input_shape=(6,), num_classes=2, hidden=(8, 8, 8))  # preflight runs the same check
    data = TensorData({"x": torch.randn(8, 6), "labels": torch.zeros(8, dtype=torch.long)})
    with DistillModule(student, loss, ["x"], TAPS) as module, OnlineTeacher(teacher, ["x"], TEACHER_TAPS) as source:
        with pytest.raises(RecipeError, match=r"bottom layer first.*pair 1 \(student tap 's1'"):
            preflight(module, source, data, (set(TAPS), set(TEACHER_TAPS)), schedule=schedule)


def recipe(tiny_recipe_dict, **term):
    tiny_recipe_dict["student"] = {"model": "builtin:mlp", "args": {"hidden": [8, 8]}}
    tiny_recipe_dict["teacher"]["args"] = {"hidden": [32, 32]}
    tiny_recipe_dict["taps"] = {"student": {"s0": "blocks.0", "s1": "blocks.1"},
                                "teacher": {"t0": "blocks.0", "t1": "blocks.1"}}
    tiny_recipe_dict["losses"] = [{"name": "kd", "weight": 1.0},
                                  {"name": "fitnet", "pairs": [["s0", "t0"], ["s1", "t1"]], **term}]
    return tiny_recipe_dict


def test_recipe_errors(tiny_recipe_dict):
    tiny_recipe_dict["losses"] = [{"name": "kd", "progressive_steps": 5}]
    with pytest.raises(RecipeError, match=r"recipe.losses\[0\].progressive_steps: KDLoss \('kd'\) has no layer "
                                          r"pairs.*fitnet, pkd"):
        recipe_from_dict(tiny_recipe_dict)
    with pytest.raises(RecipeError, match=r"recipe.losses\[1\].progressive_steps: Input should be greater"):
        recipe_from_dict(recipe(tiny_recipe_dict, progressive_steps=0))
    with pytest.raises(RecipeError, match=r"recipe.losses\[1\].progressive_steps: 2 stages of 5 steps from "
                                          r"start_step 0 end at step 10, after stop_step 8.*stop_step >= 10"):
        recipe_from_dict(recipe(tiny_recipe_dict, progressive_steps=5, stop_step=8))
    tiny_recipe_dict["losses"] = [{"name": "ce"}, {"name": "tinybert", "hidden_pairs": [["a", "a"]], "heads": 2,
                                                   "attention_pairs": [["a", "a", "a", "a"]] * 3,
                                                   "progressive_steps": 2}]
    with pytest.raises(RecipeError, match=r"recipe.losses\[1\].progressive_steps: TinyBERTLoss: .* 1 hidden and 3 "
                                          "attention pairs"):
        recipe_from_dict(tiny_recipe_dict)


def test_recipe_runs_progressively(tmp_path, tiny_recipe_dict):
    """The recipe path end to end: the option reaches the loss, and the run trains with a feature term logged."""
    from kdforge.app.run import run_recipe

    data = recipe(tiny_recipe_dict, progressive_steps=3, projector="linear")
    data["baseline"] = False
    run_recipe(recipe_from_dict(data), out_dir=tmp_path / "run")
    log = (tmp_path / "run" / "seed-0" / "student" / "log.jsonl").read_text()
    assert '"train/fitnet"' in log


def test_tiny_bert_student_learns_layer_by_layer():
    """A 2-layer BERT student, trained progressively (fitnet on hidden states, uniform map onto a 4-layer
    teacher), reduces the feature loss; layer 0 stays bit-identical during layer 1's stage."""
    from tests.encoders_kit import INPUTS, text_batch, tiny_mlm

    teacher, student = tiny_mlm(layers=4, seed=0), tiny_mlm(layers=2, seed=1)
    s_taps = {f"s{i}": f"bert.encoder.layer.{i}" for i in range(2)}
    t_taps = {f"t{i}": f"bert.encoder.layer.{i}" for i in range(4)}
    fitnet = FitNetLoss({"map": "uniform", "student": ["s0", "s1"], "teacher": ["t0", "t1", "t2", "t3"]},
                        projector="none")
    module = DistillModule(student.train(), WeightedSum({"fitnet": fitnet}, {"fitnet": 1.0}), INPUTS, s_taps)
    schedule = TermSchedule(module.loss.terms, progressive={"fitnet": 8})
    source = OnlineTeacher(teacher, INPUTS, t_taps)
    batch = text_batch()
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)

    def full_loss():
        with torch.no_grad(), module.loss.all_terms():
            return module(batch, source(batch))["loss"].item()

    start = full_loss()
    layer0 = None
    for step in range(24):  # stage 0: steps 0-7, stage 1: steps 8-15, joint: 16-23
        if step == 8:
            layer0 = {k: v.clone() for k, v in student.bert.encoder.layer[0].state_dict().items()}
        frozen = schedule.apply(module, step)
        loss = module(batch, source(batch))["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for p in frozen:
            p.grad = None
        opt.step()
        if step == 15:
            after = student.bert.encoder.layer[0].state_dict()
            assert all(torch.equal(layer0[k], after[k]) for k in layer0)
    end = full_loss()
    source.close()
    module.close()
    print(f"progressive fitnet feature loss: {start:.4f} -> {end:.4f}")
    assert end < 0.5 * start
