"""Several processes optimise the one-process objective: each process's loss is weighted by its share of the
global batch's counted entries (`kdforge.train.loop.process_share`, `kdforge.train.module.counted_entries`), so
the gradient of a token-averaged loss equals one process's gradient on the whole batch, however unevenly the
counted tokens fall. Checked here in one process, float64, by summing what each process would contribute."""

import math

import pytest
import torch

from kdforge.losses.base import Outputs, Targets
from kdforge.losses.ce import CELoss
from kdforge.losses.token_kd import TokenKDLoss
from kdforge.train.loop import logged_values, process_share
from kdforge.train.module import counted_entries
from kdforge.types import IGNORE_INDEX


def _rows(seed: int, widths: list[int], width: int = 7, vocab: int = 11) -> dict[str, torch.Tensor]:
    """LM rows with `widths[i]` counted tokens in row i (the rest are -100, as prompts and padding are)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, vocab, (len(widths), width), generator=g)
    for i, n in enumerate(widths):
        labels[i, n:] = IGNORE_INDEX
    return {"input_ids": torch.randint(0, vocab, (len(widths), width), generator=g), "labels": labels,
            "mask": labels != IGNORE_INDEX}


def _objective(student: torch.Tensor, teacher: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    targets = Targets(labels=batch["labels"], mask=batch["mask"])
    s, t = Outputs(logits=student), Outputs(logits=teacher)
    return TokenKDLoss(divergence="jsd", chunk_size=3)(s, t, targets) + CELoss()(s, t, targets)


def _split(batch: dict[str, torch.Tensor], parts: list[slice]) -> list[dict[str, torch.Tensor]]:
    return [{k: v[part] for k, v in batch.items()} for part in parts]


@pytest.mark.parametrize("parts", [[slice(0, 2), slice(2, 4)], [slice(0, 3), slice(3, 4)], [slice(0, 4), slice(4, 4)]])
def test_share_weighted_processes_give_the_one_process_gradient(parts):
    """Rows split 2/2, 3/1 and 4/0 over two processes, with 1 to 7 counted tokens per row: DDP/FSDP average the
    processes' gradients, each loss scaled by share * processes; the sum is the one-process gradient."""
    torch.manual_seed(0)
    batch = _rows(1, [7, 1, 2, 3])
    logits = torch.randn(4, 7, 11, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(4, 7, 11, dtype=torch.float64)
    whole = _objective(logits, teacher, batch)
    (expected,) = torch.autograd.grad(whole, logits)

    pieces = _split(batch, parts)
    local = [torch.tensor([float(counted_entries(p)), float(len(p["labels"]))], dtype=torch.float64) for p in pieces]
    total = torch.stack(local).sum(0)
    shares = [process_share(x, total) for x in local]
    assert sum(shares).item() == pytest.approx(1.0, abs=1e-15)
    grad, value = torch.zeros_like(logits), 0.0
    for part, piece, share in zip(parts, pieces, shares, strict=True):
        leaf = logits.detach()[part].requires_grad_(True)
        loss = _objective(leaf, teacher[part], piece)
        (g,) = torch.autograd.grad(loss * share * len(parts), leaf)
        grad[part] += g / len(parts)  # what DDP's and FSDP's gradient averaging does
        value += share.item() * loss.item()  # what the loop logs: the share-weighted sum over processes
    assert torch.allclose(grad, expected, atol=1e-15, rtol=1e-12)
    assert value == pytest.approx(whole.item(), abs=1e-14)


def test_the_logged_parts_of_two_processes_add_up_to_the_token_mean_not_the_row_mean():
    """Rows 2/2 holding 8 and 5 counted tokens: `process_share` gives 8/13 and 5/13 (not the rows' 1/2 each), and
    the parts the loop logs per process (`logged_values`) add up to (8 * mean_0 + 5 * mean_1) / 13, the one-process
    token mean, which here is far from the row-weighted (mean_0 + mean_1) / 2."""
    batch = _rows(1, [7, 1, 2, 3])
    g = torch.Generator().manual_seed(2)
    logits, teacher = (torch.randn(4, 7, 11, dtype=torch.float64, generator=g) for _ in range(2))
    halves = [slice(0, 2), slice(2, 4)]
    pieces = _split(batch, halves)
    local = [torch.tensor([float(counted_entries(p)), float(len(p["labels"]))], dtype=torch.float64) for p in pieces]
    total = torch.stack(local).sum(0)
    shares = [process_share(x, total).item() for x in local]
    assert shares == [8 / 13, 5 / 13]
    means = [_objective(logits[h], teacher[h], piece) for h, piece in zip(halves, pieces, strict=True)]
    parts = [logged_values({"loss": m}, process_share(x, total))[0] for m, x in zip(means, local, strict=True)]
    by_hand = (8 * means[0].item() + 5 * means[1].item()) / 13
    assert sum(parts) == pytest.approx(by_hand, rel=1e-6)  # logged_values rounds each term to float32 first
    assert sum(parts) == pytest.approx(_objective(logits, teacher, batch).item(), rel=1e-6)
    assert abs((means[0].item() + means[1].item()) / 2 - by_hand) > 1e-2  # rows would log something else


def test_logged_values_weigh_on_the_device_exactly_as_the_float_product():
    """The loop keeps the share a tensor (no host sync for it): each logged part is float(term) * share, bit for bit
    what multiplying the Python floats gives, and 0 for a process with no share even where its terms are NaN."""
    g = torch.Generator().manual_seed(3)
    terms = {"loss": torch.rand((), generator=g) * 7, "kd": torch.rand((), generator=g), "ce": torch.tensor(3.0)}
    share = torch.tensor(5 / 13, dtype=torch.float64)
    assert logged_values(terms, share) == [float(v) * (5 / 13) for v in terms.values()]
    assert logged_values(terms, None) == [float(v) for v in terms.values()]
    nan = {"loss": torch.tensor(float("nan")), "ce": torch.tensor(float("inf"))}
    assert logged_values(nan, torch.tensor(0.0, dtype=torch.float64)) == [0.0, 0.0]
    weighted = logged_values(nan, torch.tensor(0.5, dtype=torch.float64))
    assert math.isnan(weighted[0]) and weighted[1] == math.inf  # a share above 0 hides nothing


def test_counted_entries_counts_tokens_for_token_rows_and_rows_otherwise():
    batch = _rows(0, [7, 1, 0, 3])
    assert counted_entries(batch).item() == 11
    batch["mask"][0, :2] = False  # Targets.mask drops tokens as well as labels -100 do
    assert counted_entries(batch).item() == 9
    assert counted_entries({"input_ids": torch.zeros(3, 5, dtype=torch.long),
                            "mask": torch.ones(3, 5, dtype=torch.bool)}).item() == 15
    assert counted_entries({"x": torch.zeros(5, 4), "labels": torch.tensor([0, 1, -100, 2, 1])}).item() == 5


def test_no_counted_entry_anywhere_falls_back_to_rows():
    share = process_share(torch.tensor([0.0, 3.0], dtype=torch.float64), torch.tensor([0.0, 4.0], dtype=torch.float64))
    assert share.item() == 0.75
    assert process_share(torch.tensor([0.0, 2.0]), torch.tensor([5.0, 4.0])).item() == 0.0


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="needs torch.distributed with gloo")
def test_gkd_rollouts_generate_in_lockstep_only_with_several_processes(tmp_path):
    from kdforge.losses.gkd import _lockstep

    assert not _lockstep()  # no process group
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        assert not _lockstep()  # a world of one has no one to wait for
    finally:
        torch.distributed.destroy_process_group()
