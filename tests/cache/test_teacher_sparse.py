"""CachedTeacher's per-step path: the content check once per sample, and top-k logits read sparsely."""

import pytest
import torch
import torch.nn.functional as F
from tests.cache.test_store import Teacher, build, cached, splits
from torch.utils._python_dispatch import TorchDispatchMode

import kdforge.cache.teacher as teacher_module
from kdforge.cache.store import CacheError, CacheSettings
from kdforge.data.tensors import iterate_batches
from kdforge.losses.base import Outputs, Targets, WeightedSum
from kdforge.losses.dkd import DKDLoss
from kdforge.losses.kd import KDLoss
from kdforge.losses.sparse import TopK, reconstruct_logits, topk_refusal
from kdforge.losses.token_kd import TokenKDLoss


def counting_hashes(monkeypatch) -> list[int]:
    rows: list[int] = []
    original = teacher_module.row_hashes

    def counted(batch, keys):
        rows.append(len(batch[keys[0]]))
        return original(batch, keys)

    monkeypatch.setattr(teacher_module, "row_hashes", counted)
    return rows


def test_content_is_hashed_in_the_first_epoch_only(tmp_path, monkeypatch):
    teacher, data = Teacher(), splits()
    path, _, _ = build(tmp_path, teacher, data)
    source = cached(path)
    hashed = counting_hashes(monkeypatch)
    stream = iterate_batches(data["train"], 8, seed=0)
    for _ in range(7):  # one epoch of 50 rows: 7 batches
        source(next(stream))
    assert sum(hashed) == 50
    for _ in range(14):  # two more epochs: nothing left to check
        source(next(stream))
    assert sum(hashed) == 50
    source.recheck()
    source(next(stream))
    assert sum(hashed) == 58


def test_a_changed_row_is_caught_by_the_once_per_sample_check(tmp_path):
    teacher, data = Teacher(), splits()
    path, _, _ = build(tmp_path, teacher, data)
    changed = data["train"].tensors["x"].clone()
    changed[13, 2] += 1.0  # one value of one row differs from what the cache was built from
    data["train"].tensors["x"] = changed
    source = cached(path)
    stream = iterate_batches(data["train"], 8, seed=0)
    with pytest.raises(CacheError, match=r"inputs of samples \[13\] differ"):
        for _ in range(7):
            source(next(stream))
    # a batch holding row 13 is refused again (a failed check marks nothing as checked)
    with pytest.raises(CacheError, match=r"\[13\]"):
        source(data["train"][torch.tensor([12, 13])])


# ---------------------------------------------------------------- the top-k path: parity with float64


def topk_of(logits: torch.Tensor, k: int, dtype=torch.float16, tail=None) -> TopK:
    values, indices = logits.topk(k, dim=-1)
    return TopK(values.to(dtype), indices, torch.logsumexp(logits.float(), -1), logits.shape[-1], tail)


def dense_reference(student: torch.Tensor, topk: TopK, temperature: float, tail: str, mask=None) -> torch.Tensor:
    """T²·KL(rebuilt teacher || student) in float64 on dense tensors: the formula, independently of sparse_kl."""
    t = F.log_softmax(reconstruct_logits(topk, tail).double() / temperature, -1).flatten(0, -2)
    s = F.log_softmax(student.double() / temperature, -1).flatten(0, -2)
    kl = (t.exp() * (t - s)).sum(-1)
    if mask is not None:
        kl = kl[mask.flatten()]
    return kl.mean() * temperature**2


@pytest.mark.parametrize("tail", ["uniform", "renormalize"])
@pytest.mark.parametrize("temperature", [1.0, 3.0])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("loss", ["kd", "token_kd", "token_kd_jsd0", "token_kd_skew0"])
def test_losses_on_topk_match_the_dense_float64_reference(tail, temperature, masked, loss):
    g = torch.Generator().manual_seed(0)
    student = torch.randn(3, 5, 40, generator=g, dtype=torch.float64).float().requires_grad_(True)
    teacher = 3 * torch.randn(3, 5, 40, generator=g)
    topk = topk_of(teacher, 6, tail=tail)
    mask = (torch.rand(3, 5, generator=g) > 0.3) if masked else None
    term = {"kd": KDLoss(temperature),
            "token_kd": TokenKDLoss(temperature=temperature, chunk_size=4, tail=tail),
            "token_kd_jsd0": TokenKDLoss("jsd", beta=0.0, temperature=temperature, chunk_size=4, tail=tail),
            "token_kd_skew0": TokenKDLoss("skew_kl", alpha=0.0, temperature=temperature, tail=tail)}[loss]
    assert topk_refusal(term) is None
    value = term(Outputs(logits=student), Outputs(logits=topk), Targets(mask=mask))
    (grad,) = torch.autograd.grad(value, student)
    ref_student = student.detach().double().requires_grad_(True)
    ref = dense_reference(ref_student, topk, temperature, tail, mask)
    (ref_grad,) = torch.autograd.grad(ref, ref_student)
    assert value.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    assert torch.allclose(grad.double(), ref_grad, rtol=1e-4, atol=1e-7)


def test_options_the_sparse_path_cannot_honour_are_named():
    assert "divergence='reverse_kl'" in topk_refusal(TokenKDLoss("reverse_kl"))
    assert "vocab_size" in topk_refusal(TokenKDLoss(vocab_size=10))
    assert "DKDLoss reads the teacher's dense logits" in topk_refusal(DKDLoss())


class VocabProbe(TorchDispatchMode):
    """Records every op that allocates an output whose last dimension is the vocabulary (views allocate nothing)."""

    VIEWS = {"detach", "view", "expand", "alias", "_unsafe_view", "t", "transpose", "slice", "select"}

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab, self.ops = vocab, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for o in out if isinstance(out, (tuple, list)) else [out]:
            name = func.__name__.split(".")[0]
            if isinstance(o, torch.Tensor) and o.dim() and o.shape[-1] == self.vocab and name not in self.VIEWS:
                self.ops.append(name)
        return out


def test_training_from_a_topk_cache_builds_no_full_vocabulary_teacher_tensor(tmp_path):
    vocab = 300
    teacher, data = Teacher(width=32, classes=vocab), splits()
    path, _, _ = build(tmp_path, teacher, data, CacheSettings(logits="topk", k=10, dtype="float16"))
    source = cached(path, sparse=True)
    batch = data["train"][torch.arange(16)]
    student = torch.randn(16, vocab, requires_grad=True)
    loss = WeightedSum({"kd": KDLoss(2.0)}, {"kd": 1.0})
    with VocabProbe(vocab) as probe:
        outputs = source(batch)
        assert isinstance(outputs.logits, TopK) and outputs.logits.values.shape == (16, 10)
        teacher_ops = list(probe.ops)
        loss(Outputs(logits=student), outputs, Targets())
    assert teacher_ops == []  # reading the cache: nothing of vocabulary width
    # the loss's forward: only the student's own log-softmax (its division by T first) is vocabulary-wide
    assert probe.ops == ["div", "_log_softmax"]
    with VocabProbe(vocab) as dense_probe:  # the dense rebuild, for contrast: it fills (rows, vocab) tensors
        KDLoss(2.0)(Outputs(logits=student), Outputs(logits=reconstruct_logits(outputs.logits)), Targets())
    assert "scatter_" in dense_probe.ops and len(dense_probe.ops) > len(probe.ops)


# ---------------------------------------------------------------- through the CLI: trained sparsely, or refused


def test_a_topk_cache_trains_kd_and_refuses_a_loss_that_needs_dense_logits(tmp_path, capsys):
    from tests.cache.test_pipeline import cli, iris_recipe

    recipe = iris_recipe(tmp_path, "teacher.safetensors", logits="topk", k=2)
    assert cli(["cache", str(recipe), "--quiet"], capsys)[0] == 0
    code, out, _ = cli(["distill", str(recipe), "--out", str(tmp_path / "run"), "--quiet"], capsys)
    assert code == 0, out
    code, _, err = cli(["distill", str(recipe), "--out", str(tmp_path / "run2"), "--quiet",
                        "--set", "losses=[{name: dkd}]"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "recipe.losses (dkd)" in err and "top-k" in err and "teacher.cache.logits: full" in err
