"""margin_mse: cross-encoder -> dual-encoder ranking distillation (Hofstätter et al. 2020)."""

import pytest
import torch
from torch import nn

from kdforge.errors import ShapeMismatchError
from kdforge.losses import Outputs, Targets, WeightedSum
from kdforge.losses.margin_mse import MarginMSELoss
from kdforge.train.module import DistillModule, OnlineTeacher


def test_hand_value_with_two_negatives():
    s = torch.tensor([[3.0, 1.0, 0.0]])  # margins 2, 3
    t = torch.tensor([[10.0, 9.0, 5.0]])  # margins 1, 5
    loss = MarginMSELoss()(Outputs(logits=s), Outputs(logits=t), Targets())
    assert loss.item() == pytest.approx(((2 - 1) ** 2 + (3 - 5) ** 2) / 2)
    # only margins count: shifting either model's scores changes nothing
    assert MarginMSELoss()(Outputs(logits=s + 7), Outputs(logits=t - 3), Targets()).item() == pytest.approx(2.5)


def test_bad_shapes():
    with pytest.raises(ShapeMismatchError, match="1 \\+ n"):
        MarginMSELoss()(Outputs(logits=torch.zeros(3, 1)), Outputs(logits=torch.zeros(3, 1)), Targets())
    with pytest.raises(ShapeMismatchError):
        MarginMSELoss()(Outputs(logits=torch.zeros(3, 2)), Outputs(logits=torch.zeros(3, 3)), Targets())


class CrossEncoder(nn.Module):
    """Scores (query, passage) pairs jointly: a BERT with one output over the concatenated tokens."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, pair_input_ids, pair_attention_mask):
        b, n, t = pair_input_ids.shape
        out = self.bert(input_ids=pair_input_ids.reshape(b * n, t),
                        attention_mask=pair_attention_mask.reshape(b * n, t))
        return out.logits.reshape(b, n)


def test_cross_encoder_to_dual_encoder():
    transformers = pytest.importorskip("transformers")
    from kdforge.models.hf_student import DualEncoder, SentenceEncoder

    def config(layers, labels=None):
        kw = {"num_labels": labels} if labels else {}
        return transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                                       intermediate_size=32, max_position_embeddings=24, hidden_dropout_prob=0.0,
                                       attention_probs_dropout_prob=0.0, **kw)

    torch.manual_seed(0)
    cross = CrossEncoder(transformers.BertForSequenceClassification(config(2, 1))).eval()
    dual = DualEncoder(SentenceEncoder(transformers.BertModel(config(1)), normalize=False))
    g = torch.Generator().manual_seed(0)
    q, d = torch.randint(1, 40, (32, 5), generator=g), torch.randint(1, 40, (32, 2, 7), generator=g)
    batch = {"query_input_ids": q, "query_attention_mask": torch.ones_like(q), "doc_input_ids": d,
             "doc_attention_mask": torch.ones_like(d),
             "pair_input_ids": torch.cat([q.unsqueeze(1).expand(-1, 2, -1), d], dim=-1)}
    batch["pair_attention_mask"] = torch.ones_like(batch["pair_input_ids"])
    teacher = OnlineTeacher(cross, ["pair_input_ids", "pair_attention_mask"])
    module = DistillModule(dual, WeightedSum({"margin_mse": MarginMSELoss()}, {"margin_mse": 1.0}),
                           ["query_input_ids", "query_attention_mask", "doc_input_ids", "doc_attention_mask"])
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    values = []
    for _ in range(60):
        loss = module(batch, teacher(batch))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        values.append(loss.item())
    assert values[-1] < 0.3 * values[0]
