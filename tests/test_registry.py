import pytest

from kdforge.errors import UnknownNameError
from kdforge.losses.base import DistillLoss
from kdforge.registry import LOSSES, Registry


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownNameError, match=r"recipe.losses\[1\].name: unknown loss 'kdd'. Did you mean 'kd'"):
        LOSSES.get("kdd", where="recipe.losses[1].name")


def test_duplicate_registration_raises_unless_override():
    reg = Registry("thing")
    reg.register("a")(object)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(object)
    reg.register("a", override=True)(int)
    assert reg.get("a") is int


def test_reserved_and_variadic_parameters_are_rejected():
    reg = Registry("loss", reserved=("name", "weight"))

    class Weighted(DistillLoss):
        def __init__(self, weight: float = 1.0) -> None:
            super().__init__()

    class Variadic(DistillLoss):
        def __init__(self, **kwargs) -> None:
            super().__init__()

    with pytest.raises(ValueError, match="'weight' is reserved"):
        reg.register("weighted")(Weighted)
    with pytest.raises(ValueError, match=r"\*args/\*\*kwargs are not allowed"):
        reg.register("variadic")(Variadic)


def test_names_must_be_snake_case():
    with pytest.raises(ValueError, match="snake_case"):
        Registry("thing").register("Bad-Name")
