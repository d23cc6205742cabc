import pytest
import torch
from torch import nn

from kdforge.capture import Capture, resolve_module
from kdforge.errors import KDForgeError, UnknownNameError
from kdforge.models.builtin import MLP


class Wrapper(nn.Module):
    """Stands in for DDP: the user's model sits under `.module`."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)


def test_records_named_outputs_only_inside_the_context():
    model = MLP(input_shape=(4,), num_classes=3, hidden=(8, 6))
    capture = Capture(model, {"h0": "blocks.0", "h1": "blocks.1"})
    with capture:
        model(torch.randn(2, 4))
    assert capture.features["h0"].shape == (2, 8) and capture.features["h1"].shape == (2, 6)
    before = dict(capture.features)
    model(torch.randn(2, 4))  # outside the context: nothing recorded
    assert capture.features.keys() == before.keys() and all(capture.features[k] is before[k] for k in before)


def test_unknown_path_lists_close_names():
    model = MLP(input_shape=(4,), num_classes=3, hidden=(8,))
    with pytest.raises(UnknownNameError, match=r"recipe.taps.student.h: unknown submodule of MLP 'block.0'. "
                                               r"Did you mean 'blocks.0'"):
        Capture(model, {"h": "block.0"}, owner="student", where="recipe.taps.student")


def test_messages_name_the_taps_neutrally_by_default():
    model = MLP(input_shape=(4,), num_classes=3, hidden=(8,))
    with pytest.raises(UnknownNameError, match=r"^taps.student.h: unknown submodule"):
        Capture(model, {"h": "block.0"}, owner="student")


def test_close_detaches_every_hook_and_an_unknown_path_leaves_none():
    model = MLP(input_shape=(4,), num_classes=3, hidden=(8, 6))
    capture = Capture(model, {"h0": "blocks.0", "h1": "blocks.1"})
    assert all(len(block._forward_hooks) == 1 for block in model.blocks)
    capture.close()
    capture.close()  # twice is fine
    assert all(len(block._forward_hooks) == 0 for block in model.blocks)
    with pytest.raises(UnknownNameError):
        Capture(model, {"h0": "blocks.0", "bad": "blocks.9"})
    assert len(model.blocks[0]._forward_hooks) == 0


def test_owners_remove_their_hooks_on_the_way_out():
    from kdforge.losses.base import WeightedSum
    from kdforge.losses.ce import CELoss
    from kdforge.train.module import DistillModule, OnlineTeacher

    student, teacher = MLP(input_shape=(4,), num_classes=3, hidden=(8,)), MLP(input_shape=(4,), num_classes=3,
                                                                               hidden=(8,))
    with pytest.raises(RuntimeError, match="training failed"):
        with DistillModule(student, WeightedSum({"ce": CELoss()}, {"ce": 1.0}), ["x"], {"h": "blocks.0"}), \
                OnlineTeacher(teacher, ["x"], {"h": "blocks.0"}):
            assert len(student.blocks[0]._forward_hooks) == 1 and len(teacher.blocks[0]._forward_hooks) == 1
            raise RuntimeError("training failed")
    assert len(student.blocks[0]._forward_hooks) == 0 and len(teacher.blocks[0]._forward_hooks) == 0


def test_wrapped_model_paths_work_with_and_without_prefix():
    model = MLP(input_shape=(4,), num_classes=3, hidden=(8,))
    wrapped = Wrapper(model)
    assert resolve_module(wrapped, "blocks.0") is model.blocks[0]
    assert resolve_module(wrapped, "module.blocks.0") is model.blocks[0]
    capture = Capture(wrapped, {"h": "module.blocks.0"})
    with capture:
        wrapped(torch.randn(2, 4))
    assert capture.features["h"].shape == (2, 8)


def test_hook_that_never_fires_is_an_error():
    model = MLP(input_shape=(4,), num_classes=3, hidden=(8,))
    model.unused = nn.Linear(2, 2)
    capture = Capture(model, {"u": "unused"}, owner="teacher", where="recipe.taps.teacher")
    with capture:
        model(torch.randn(2, 4))
    with pytest.raises(KDForgeError, match=r"recipe.taps.teacher: these hooks never fired.*u \(unused\)"):
        capture.check_fired()


def test_capture_survives_torch_compile():
    model = MLP(input_shape=(4,), num_classes=3, hidden=(8,))
    capture = Capture(model, {"h": "blocks.0"})
    compiled = torch.compile(model, backend="eager")
    with capture:
        compiled(torch.randn(2, 4))
    assert capture.features["h"].shape == (2, 8)
