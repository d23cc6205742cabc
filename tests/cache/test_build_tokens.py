"""Cache build batches by tokens under `max_batch_tokens`, stores the same outputs, and logs its throughput."""

import logging

import torch
from torch import nn

from kdforge.cache.hashing import teacher_fingerprint
from kdforge.cache.store import CacheSettings, CacheStore, batch_rows, fingerprint_splits, tokens_per_row, write_cache
from kdforge.data.tensors import TensorData


class TinyLM(nn.Module):
    """Embedding + linear head over (N, T) token ids; records the shape of every batch it sees."""

    def __init__(self, vocab=50):
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.head = nn.Embedding(vocab, 8), nn.Linear(8, vocab)
        self.shapes = []

    def forward(self, input_ids):
        self.shapes.append(tuple(input_ids.shape))
        return self.head(self.embed(input_ids))


def build(tmp_path, name, **kw):
    teacher = TinyLM()
    g = torch.Generator().manual_seed(1)
    data = {"train": TensorData({"input_ids": torch.randint(0, 50, (37, 16), generator=g)})}
    fingerprints = {"teacher": teacher_fingerprint(teacher), "data": fingerprint_splits(data, ["input_ids"])}
    write_cache(teacher, data, tmp_path / name, CacheSettings(logits="topk", k=5), fingerprints, ["input_ids"],
                batch_size=32, **kw)
    return teacher, CacheStore(tmp_path / name)


def test_token_budget_bounds_every_teacher_batch_and_stores_the_same_outputs(tmp_path, caplog):
    _, by_rows = build(tmp_path, "rows")
    with caplog.at_level(logging.INFO, logger="kdforge"):
        teacher, by_tokens = build(tmp_path, "tokens", max_batch_tokens=100)  # 100 // 16 positions = 6 rows
    built = teacher.shapes[1:]  # the first call is the one-row probe that sizes the arrays
    assert {rows for rows, _ in built[:-1]} == {6} and built[-1] == (1, 16)  # 37 rows = 6 x 6 + 1
    assert all(rows * length <= 100 for rows, length in built)
    a, b = by_rows.split("train").arrays, by_tokens.split("train").arrays
    assert set(a) == set(b)
    for stem in a:
        assert torch.allclose(a[stem].float(), b[stem].float(), atol=1e-3), stem
    assert any("tokens/s" in r.getMessage() and "6 rows x 16 positions" in r.getMessage() for r in caplog.records)


def test_rows_per_batch_from_the_budget():
    data = TensorData({"input_ids": torch.zeros(4, 256, dtype=torch.long), "x": torch.zeros(4, 3)})
    assert tokens_per_row(data, ["input_ids"]) == 256 and tokens_per_row(data, ["x"]) == 1
    assert batch_rows(512, 256, None) == 512
    assert batch_rows(512, 256, 8192) == 32
    assert batch_rows(512, 256, 100) == 1  # one row even when a single row is over the budget
    assert batch_rows(16, 1, 8192) == 16
