"""text:stdlib_retrieval rows and the ranking models: pairs join correctly, candidates are scored independently,
and a cross-encoder teacher distils into a dual encoder with margin_mse."""

import pytest
import torch

from kdforge.data.corpus import DocSentence
from kdforge.data.retrieval import join_pairs, ranking_triples, stdlib_retrieval
from kdforge.errors import RecipeError

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def ranking():
    return stdlib_retrieval(vocab_size=500, query_len=16, doc_len=16, negatives=2, limit=300)


def test_rows_have_the_positive_first_and_negatives_from_other_objects():
    records = [DocSentence(f"Sentence {i} about object {i // 3}.", "pkg.mod", f"obj{i // 3}") for i in range(60)]
    triples = ranking_triples(records, negatives=3, limit=None, seed=0)
    owner = {r.text: r.qualname for r in records}
    assert len(triples) == 20 * 2  # 20 objects of 3 sentences: 2 consecutive (query, positive) pairs each
    for query, docs in triples:
        assert len(docs) == 4 and owner[docs[0]] == owner[query]
        assert all(owner[d] != owner[query] for d in docs[1:]) and len(set(docs[1:])) == 3


def test_pairs_join_query_and_candidate_with_segments():
    q_ids, q_mask = torch.tensor([[2, 7, 8, 3, 0]]), torch.tensor([[1, 1, 1, 1, 0]])
    d_ids = torch.tensor([[[2, 9, 3, 0], [2, 5, 6, 3]]])
    d_mask = (d_ids != 0).long()
    ids, attention, types = join_pairs(q_ids, q_mask, d_ids, d_mask, pad_id=0)
    assert ids[0, 0].tolist() == [2, 7, 8, 3, 9, 3, 0, 0]
    assert ids[0, 1].tolist() == [2, 7, 8, 3, 5, 6, 3, 0]
    assert attention[0, 0].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    assert types[0, 1].tolist() == [0, 0, 0, 0, 1, 1, 1, 0]


def test_source_shapes_labels_and_split(ranking):
    bundle, tok = ranking
    rows = bundle.teacher_train.tensors
    n = len(bundle.teacher_train)
    assert rows["pair_input_ids"].shape == (n, 3, 31) and rows["doc_input_ids"].shape == (n, 3, 16)
    assert bundle.info.num_classes == 3 and bundle.info.input_shape == (31,)
    assert bool((rows["labels"] == 0).all())
    assert len(bundle.teacher_train) + len(bundle.val) + len(bundle.test) == 300
    seen = set(bundle.teacher_train.tensors["index"].tolist())
    assert not seen & set(bundle.test.tensors["index"].tolist())


def test_bad_negatives_is_a_recipe_error():
    with pytest.raises(RecipeError, match="recipe.data.args.negatives"):
        stdlib_retrieval(negatives=0, limit=50, where="recipe.data")


def test_models_score_each_candidate_independently(ranking):
    from kdforge.models.retrieval import CrossEncoder, dual_encoder

    bundle, tok = ranking
    batch = bundle.test[torch.arange(4)]
    cross = CrossEncoder(bundle.info.input_shape, 3, vocab_size=tok.vocab_size, layers=1, hidden=16, dropout=0.0)
    dual = dual_encoder(bundle.info.input_shape, 3, vocab_size=tok.vocab_size, layers=1, hidden=16, dropout=0.0)
    order = torch.tensor([2, 0, 1])
    for model, keys in ((cross, ["pair_input_ids", "pair_attention_mask", "pair_token_type_ids"]),
                        (dual, ["query_input_ids", "query_attention_mask", "doc_input_ids", "doc_attention_mask"])):
        model.eval()
        scores = model(**{k: batch[k] for k in keys})
        shuffled = {k: (batch[k][:, order] if k.startswith(("pair", "doc")) else batch[k]) for k in keys}
        assert scores.shape == (4, 3)
        torch.testing.assert_close(model(**shuffled), scores[:, order])


def test_cross_encoder_distils_into_a_dual_encoder_with_margin_mse(ranking):
    from kdforge.losses import WeightedSum
    from kdforge.losses.margin_mse import MarginMSELoss, margins
    from kdforge.models.retrieval import CrossEncoder, dual_encoder
    from kdforge.train.module import DistillModule, OnlineTeacher

    torch.manual_seed(0)
    bundle, tok = ranking
    teacher = CrossEncoder(bundle.info.input_shape, 3, vocab_size=tok.vocab_size, layers=1, hidden=16, dropout=0.0)
    student = dual_encoder(bundle.info.input_shape, 3, vocab_size=tok.vocab_size, layers=1, hidden=16, dropout=0.0)
    source = OnlineTeacher(teacher.eval(), ["pair_input_ids", "pair_attention_mask", "pair_token_type_ids"])
    module = DistillModule(student, WeightedSum({"margin_mse": MarginMSELoss()}, {"margin_mse": 1.0}),
                           ["query_input_ids", "query_attention_mask", "doc_input_ids", "doc_attention_mask"])
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    batch = bundle.teacher_train[torch.arange(32)]
    held = bundle.test[torch.arange(len(bundle.test))]

    def gap() -> float:  # margin disagreement on held-out rows
        with torch.no_grad():
            s = student.eval()(*(held[k] for k in module.inputs))
            t = teacher(*(held[k] for k in source.inputs))
        student.train()
        return float(((margins(s) - margins(t)) ** 2).mean())

    before = gap()
    for _ in range(40):
        loss = module(batch, source(batch))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert gap() < 0.5 * before
