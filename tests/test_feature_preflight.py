"""Feature losses fail before training, with the taps, the shapes and the fix, when a pair cannot be compared;
preflight builds their projectors so the optimizer sees them."""

import pytest
import torch
import yaml

from kdforge.app.build import build_loss
from kdforge.app.preflight import preflight
from kdforge.cli import main
from kdforge.data.tensors import TensorData
from kdforge.errors import ShapeMismatchError
from kdforge.models.builtin import ConvNet
from kdforge.recipe import LossTerm
from kdforge.train.module import DistillModule, OnlineTeacher

TEACHER_TAPS = {"t0": "blocks.0", "t1": "blocks.1"}  # (B, 16, 8, 8) and, after pooling, (B, 32, 4, 4)
STUDENT_TAPS = {"s0": "blocks.0", "s1": "blocks.1"}  # (B, 4, 8, 8) and (B, 8, 4, 4)


def setup(term):
    teacher = ConvNet(input_shape=(1, 8, 8), num_classes=3, channels=(16, 32), hidden=0)
    student = ConvNet(input_shape=(1, 8, 8), num_classes=3, channels=(4, 8), hidden=0)
    module = DistillModule(student, build_loss([LossTerm(**term)]), ["x"], STUDENT_TAPS)
    online = OnlineTeacher(teacher, ["x"], TEACHER_TAPS)
    data = TensorData({"x": torch.randn(16, 1, 8, 8), "labels": torch.randint(0, 3, (16,))})
    return module, online, data


def run_preflight(term):
    module, online, data = setup(term)
    before = {k: v.clone() for k, v in module.student.state_dict().items()}
    try:
        return module, preflight(module, online, data, (set(STUDENT_TAPS), set(TEACHER_TAPS)))
    finally:
        after = module.student.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), "preflight must not train the student"


def test_fitnet_channel_mismatch_fails_in_preflight_naming_taps_shapes_and_fix():
    with pytest.raises(ShapeMismatchError, match=r"fitnet pair \('s1', 't1'\): .*\(8, 8, 4, 4\) vs \(8, 32, 4, 4\)\. "
                                                 r"Add `projector: conv1x1`"):
        run_preflight({"name": "fitnet", "pairs": [["s1", "t1"]], "projector": "none"})


def test_at_spatial_mismatch_fails_in_preflight():
    with pytest.raises(ShapeMismatchError, match=r"at pair \('s0', 't1'\): student \(B, 4, 8, 8\) vs teacher "
                                                 r"\(B, 32, 4, 4\).*equal spatial size"):
        run_preflight({"name": "at", "pairs": [["s0", "t1"]]})


def test_preflight_builds_the_projectors_before_the_optimizer_exists():
    module, shapes = run_preflight({"name": "fitnet", "pairs": [["s0", "t0"], ["s1", "t1"]]})
    names = {n for n, _ in module.named_parameters()}
    assert {"loss.terms.fitnet.projectors.0.layer.weight", "loss.terms.fitnet.projectors.1.layer.weight"} <= names
    assert shapes["student.s1"] == (8, 8, 4, 4) and shapes["teacher.t1"] == (8, 32, 4, 4)


def test_cli_exits_2_with_a_one_line_message(tmp_path, capsys):
    recipe = {
        "name": "bad-fitnet",
        "seeds": [0],
        "data": {"source": "sklearn:digits"},
        "teacher": {"model": "builtin:cnn", "args": {"channels": [8, 16], "hidden": 0},
                    "train": {"epochs": 1, "progress": False}},
        "student": {"model": "builtin:cnn", "args": {"channels": [4, 8], "hidden": 0}},
        "taps": {"student": {"s1": "blocks.1"}, "teacher": {"t1": "blocks.1"}},
        "losses": [{"name": "ce"}, {"name": "fitnet", "pairs": [["s1", "t1"]], "projector": "none"}],
        "train": {"epochs": 1, "progress": False},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(SystemExit) as info:
        main(["distill", str(path), "--out", str(tmp_path / "run"), "-q"])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert "fitnet pair ('s1', 't1')" in err and "(8, 8, 4, 4) vs (8, 16, 4, 4)" in err and "projector" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "seed-0" / "student" / "model.json").exists()
