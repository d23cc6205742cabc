import pytest
import torch
from torch import nn

from kdforge.errors import ShapeMismatchError
from kdforge.models.adapters import Projector


def test_auto_builds_conv_for_maps_and_linear_for_vectors_from_the_first_batch():
    conv = Projector("auto")
    assert conv(torch.randn(2, 3, 4, 4), like=torch.randn(2, 7, 4, 4)).shape == (2, 7, 4, 4)
    assert isinstance(conv.layer, nn.Conv2d) and conv.layer.kernel_size == (1, 1)
    linear = Projector("auto")
    assert linear(torch.randn(2, 5, 6), like=torch.randn(2, 5, 9)).shape == (2, 5, 9)  # token states
    assert isinstance(linear.layer, nn.Linear) and linear.layer.weight.shape == (9, 6)
    fixed = Projector("linear", out_features=4, batchnorm=True)
    assert fixed(torch.randn(3, 6)).shape == (3, 4) and isinstance(fixed.norm, nn.BatchNorm1d)


def test_a_saved_projector_loads_into_an_unbuilt_one():
    built = Projector("auto", batchnorm=True)
    built(torch.randn(4, 3, 2, 2), like=torch.randn(4, 5, 2, 2))
    fresh = Projector("auto", batchnorm=True)
    fresh.load_state_dict(built.state_dict())
    x = torch.randn(4, 3, 2, 2)
    built.eval(), fresh.eval()
    assert torch.equal(built(x), fresh(x))


def test_built_projector_follows_moves_of_its_owner():
    proj = Projector("linear").double()
    y = proj(torch.randn(2, 3, dtype=torch.float64), like=torch.randn(2, 4))
    assert y.dtype == torch.float64 and proj.layer.weight.dtype == torch.float64


def test_projector_parameters_are_not_part_of_the_exported_student():
    """A projector is a submodule of the loss, never of the student: the saved model holds only the student."""
    from kdforge.losses.base import Outputs, WeightedSum
    from kdforge.losses.fitnet import FitNetLoss
    from kdforge.models.builtin import MLP
    from kdforge.train.module import DistillModule

    student = MLP(input_shape=(4,), num_classes=3, hidden=(8,))
    loss = WeightedSum({"fitnet": FitNetLoss(pairs=[("h", "t")])}, {"fitnet": 1.0})
    module = DistillModule(student, loss, ["x"], {"h": "blocks.0"})
    module({"x": torch.randn(2, 4)}, Outputs(features={"t": torch.randn(2, 5)}))
    trainable = {name for name, _ in module.named_parameters()}
    assert "loss.terms.fitnet.projectors.0.layer.weight" in trainable  # the optimizer sees it
    assert not any("projector" in key for key in student.state_dict())  # the exported student does not


def test_errors():
    with pytest.raises(ValueError, match="'projector' parameter of Projector must be one of"):
        Projector("conv3x3")
    with pytest.raises(ShapeMismatchError, match="conv1x1 projector needs \\(B, C, H, W\\) features"):
        Projector("conv1x1")(torch.randn(2, 3), like=torch.randn(2, 4))
    proj = Projector("linear")
    proj(torch.randn(2, 3), like=torch.randn(2, 4))
    with pytest.raises(ShapeMismatchError, match="built for 3 input features on its first batch, now given 5"):
        proj(torch.randn(2, 5))
