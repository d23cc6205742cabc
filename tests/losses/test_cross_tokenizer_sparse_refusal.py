"""uld, span_kl and span_hybrid say themselves why a sparse teacher cache cannot serve them (`sparse_refusal`),
and preflight refuses them through that one path, as it does every other loss."""

from types import SimpleNamespace

import pytest

from kdforge.app.preflight import _check_sparse
from kdforge.errors import RecipeError
from kdforge.losses.span_kl import SpanHybridLoss, SpanKLLoss
from kdforge.losses.sparse import topk_refusal
from kdforge.losses.uld import ULDLoss

KINDS = ("topk", "sampled", "topk_tail")
CROSS = (ULDLoss, SpanKLLoss, SpanHybridLoss)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("loss", CROSS, ids=lambda c: c.__name__)
def test_each_cross_tokenizer_loss_declares_its_refusal(loss, kind):
    term = loss()
    reason = term.sparse_refusal(kind)
    assert reason == topk_refusal(term, kind)
    assert "cross-tokenizer losses (uld, span_kl, span_hybrid)" in reason and f"a {kind} cache" in reason
    assert "whole next-token distribution" in reason


def fake_cache(kind):
    return SimpleNamespace(store=SimpleNamespace(settings=SimpleNamespace(logits=kind)), tail="uniform")


@pytest.mark.parametrize("loss", CROSS, ids=lambda c: c.__name__)
def test_preflight_refuses_them_naming_the_term_and_the_way_out(loss):
    module = SimpleNamespace(loss=SimpleNamespace(terms={"kd": _Plain(), "across": loss()}))
    with pytest.raises(RecipeError, match=r"^recipe.losses \(across\): the teacher cache holds sampled tokens, and "
                                          r"the cross-tokenizer losses .* a sampled cache .* Build a full-logit cache "
                                          r"\(teacher.cache.logits: full\) or run the teacher online"):
        _check_sparse(module, fake_cache("sampled"))


def test_a_loss_of_ones_own_with_sparse_refusal_is_refused_the_same_way():
    """No list of classes in preflight: any loss that declares a reason is refused with it."""
    module = SimpleNamespace(loss=SimpleNamespace(terms={"mine": _Declares()}))
    with pytest.raises(RecipeError, match=r"recipe.losses \(mine\): the teacher cache holds top-k logits, and it "
                                          r"needs every topk entry\."):
        _check_sparse(module, fake_cache("topk"))
    _check_sparse(SimpleNamespace(loss=SimpleNamespace(terms={"kd": _Plain()})), fake_cache("topk"))


class _Plain:
    """Reads a sparse cache (what kd at temperature 1 declares)."""

    def sparse_refusal(self, kind):
        return None


class _Declares:
    def sparse_refusal(self, kind):
        return f"it needs every {kind} entry"
