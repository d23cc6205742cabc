"""Several processes optimise the one-process objective: each process's loss is weighted by its share of the
global batch's counted entries (`kdforge.train.loop.process_share`, `kdforge.train.module.counted_entries`), so
the gradient of a token-averaged loss equals one process's gradient on the whole batch, however unevenly the
counted tokens fall. Checked here in one process, float64, by summing what each process would contribute."""

import pytest
import torch

from kdforge.losses.base import Outputs, Targets
from kdforge.losses.ce import CELoss
from kdforge.losses.token_kd import TokenKDLoss
from kdforge.train.loop import process_share
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


def test_weighting_by_rows_would_differ_when_tokens_fall_unevenly():
    """The check above can fail: rows 2/2 with 8 and 5 counted tokens weighted by rows miss the token mean."""
    batch = _rows(1, [7, 1, 2, 3])
    logits, teacher = torch.randn(4, 7, 11, dtype=torch.float64), torch.randn(4, 7, 11, dtype=torch.float64)
    whole = _objective(logits, teacher, batch).item()
    halves = [_objective(logits[p], teacher[p], piece).item()
              for p, piece in zip([slice(0, 2), slice(2, 4)], _split(batch, [slice(0, 2), slice(2, 4)]), strict=True)]
    assert abs(0.5 * halves[0] + 0.5 * halves[1] - whole) > 1e-3


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
