import pytest

from kdforge.errors import UnknownNameError
from kdforge.losses.base import DistillLoss
from kdforge.losses.gkd import on_policy_step
from kdforge.registry import LOSSES, EntryInfo, LossInfo, Registry


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


def test_info_is_a_typed_record():
    info = LOSSES.info("kd")
    assert isinstance(info, LossInfo) and info.example == {"temperature": 4.0} and "Hinton" in info.paper
    assert info.step is None and info.evaluate is None and info.nonzero_at_match is None
    assert LOSSES.info("gkd").step is on_policy_step and LOSSES.info("gkd").evaluate is not None
    with pytest.raises(TypeError):
        info.example["temperature"] = 1.0  # the registry's entry cannot be edited through its info
    with pytest.raises(UnknownNameError, match="unknown loss 'kdd'"):
        LOSSES.info("kdd")


def test_unknown_or_missing_info_keywords_raise_at_registration():
    reg = Registry("loss", info=LossInfo)
    with pytest.raises(TypeError, match=r"loss 'x': .*unexpected keyword argument 'summry'"):
        reg.register("x", summry="s", paper="p", example={})
    with pytest.raises(TypeError, match=r"loss 'x': .*missing 1 required keyword-only argument: 'paper'"):
        reg.register("x", summary="s", example={})
    assert "x" not in reg


def test_plain_registries_keep_an_optional_summary():
    reg = Registry("thing")
    reg.register("a", summary="the letter a")(object)
    reg.register("b")(int)
    assert reg.info("a") == EntryInfo(summary="the letter a") and reg.info("b").summary == ""
