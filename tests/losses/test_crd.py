import math

import pytest
import torch
import torch.nn.functional as F

from kdforge.losses.base import Outputs, Targets
from kdforge.losses.crd import CRDLoss, nce_loss


def outputs(s, t):
    return Outputs(features={"s": s}), Outputs(features={"t": t})


def nce_by_hand(scores, num_samples):
    """The authors' ContrastLoss written out: P_pos/(P_pos + K·Pn) and K·Pn/(P_neg + K·Pn), plain floats."""
    total = 0.0
    for row in scores:
        k = len(row) - 1
        noise = k / num_samples
        total += math.log(row[0] / (row[0] + noise))
        total += sum(math.log(noise / (p + noise)) for p in row[1:])
    return -total / len(scores)


def test_nce_matches_the_authors_formula():
    scores = torch.tensor([[0.9, 0.01, 0.2], [0.05, 0.3, 0.001]])
    assert nce_loss(scores.log(), 10).item() == pytest.approx(nce_by_hand(scores.tolist(), 10), rel=1e-6)


def test_forward_matches_a_recomputation_from_banks_heads_and_negatives():
    torch.manual_seed(0)
    n, k, dim = 20, 5, 4
    loss = CRDLoss(pairs=[("s", "t")], num_samples=n, num_negatives=k, embed_dim=dim, temperature=0.5).eval()
    s, t = torch.randn(3, 6), torch.randn(3, 8)
    index = torch.tensor([2, 7, 19])
    loss(*outputs(s, t), Targets(index=index))  # builds the heads and fixes Z (eval: the banks stay)
    head = loss.heads[0]
    torch.manual_seed(1)
    value = loss(*outputs(s, t), Targets(index=index)).item()
    torch.manual_seed(1)
    negatives = torch.randint(n, (3, k))  # the same draw the loss made
    with torch.no_grad():
        v_s = F.normalize(head.embed_student(s), dim=1)
        v_t = F.normalize(head.embed_teacher(t), dim=1)
    z_s, z_t = head.log_z.exp().tolist()
    expected = 0.0
    for anchor, bank, z in ((v_s, head.memory_teacher, z_s), (v_t, head.memory_student, z_t)):
        scores = []
        for b in range(3):
            rows = [int(index[b]), *negatives[b].tolist()]
            scores.append([math.exp(float(bank[r] @ anchor[b]) / 0.5) / z for r in rows])
        expected += nce_by_hand(scores, n)
    assert value == pytest.approx(expected, rel=1e-4)


def test_normaliser_is_estimated_once_then_fixed():
    torch.manual_seed(0)
    loss = CRDLoss(pairs=[("s", "t")], num_samples=50, num_negatives=10, embed_dim=8)
    index = torch.arange(4)
    loss(*outputs(torch.randn(4, 5), torch.randn(4, 5)), Targets(index=index))
    first = loss.heads[0].log_z.clone()
    assert torch.isfinite(first).all()
    loss(*outputs(torch.randn(4, 5) * 3, torch.randn(4, 5)), Targets(index=index))
    assert torch.equal(loss.heads[0].log_z, first)


def test_banks_move_towards_embeddings_in_training_only():
    torch.manual_seed(0)
    loss = CRDLoss(pairs=[("s", "t")], num_samples=10, num_negatives=3, embed_dim=4, momentum=0.5)
    s, t, index = torch.randn(2, 5), torch.randn(2, 5), torch.tensor([1, 4])
    before = loss.heads[0].memory_student.clone()
    loss.eval()(*outputs(s, t), Targets(index=index))
    assert torch.equal(loss.heads[0].memory_student, before)  # preflight and evaluation leave the banks alone
    loss.train()(*outputs(s, t), Targets(index=index))
    v_s = F.normalize(loss.heads[0].embed_student(s), dim=1)
    expected = F.normalize(0.5 * before[index] + 0.5 * v_s, dim=1)
    after = loss.heads[0].memory_student
    assert torch.allclose(after[index], expected, atol=1e-6)
    untouched = [i for i in range(10) if i not in (1, 4)]
    assert torch.equal(after[untouched], before[untouched])


def test_degenerate_aligned_embeddings_score_better_than_random_ones():
    torch.manual_seed(0)
    n = 64
    loss = CRDLoss(pairs=[("s", "t")], num_samples=n, num_negatives=32, embed_dim=8, momentum=0.0).train()
    x = torch.randn(n, 6)
    for start in range(0, n, 16):  # one pass fills both banks with the current embeddings
        loss(*outputs(x[start:start + 16], x[start:start + 16]), Targets(index=torch.arange(start, start + 16)))
    loss.eval()
    # make the heads identical, so matching features give identical embeddings
    loss.heads[0].embed_teacher.load_state_dict(loss.heads[0].embed_student.state_dict())
    idx = torch.arange(16)
    torch.manual_seed(3)
    aligned = loss(*outputs(x[:16], x[:16]), Targets(index=idx)).item()
    torch.manual_seed(3)
    shuffled = loss(*outputs(x[:16], x[torch.randperm(16)]), Targets(index=idx)).item()
    assert aligned < shuffled


def test_rejects_missing_ids_out_of_range_ids_and_bad_sizes():
    loss = CRDLoss(pairs=[("s", "t")], num_samples=8, num_negatives=2, embed_dim=4)
    with pytest.raises(ValueError, match="CRDLoss needs sample ids"):
        loss(*outputs(torch.randn(2, 3), torch.randn(2, 3)), Targets())
    with pytest.raises(ValueError, match="sample id 8 is outside the memory bank of 8 rows"):
        loss(*outputs(torch.randn(2, 3), torch.randn(2, 3)), Targets(index=torch.tensor([0, 8])))
    with pytest.raises(ValueError, match=r"num_negatives \(8\) must be smaller than num_samples \(8\)"):
        CRDLoss(pairs=[("s", "t")], num_samples=8, num_negatives=8)
