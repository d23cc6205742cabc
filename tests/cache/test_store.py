"""The teacher-output store: round trips, fingerprints, checksums, interrupted builds, shuffled data."""

import numpy as np
import pytest
import torch
from torch import nn

from kdforge.cache.hashing import row_hashes, teacher_fingerprint
from kdforge.cache.store import CacheError, CacheSettings, CacheStore, fingerprint_splits, partial_dir, write_cache
from kdforge.cache.teacher import CachedTeacher, ReplayTeacher
from kdforge.cache.topk import reconstruct_log_probs
from kdforge.data.tensors import TensorData, iterate_batches
from kdforge.errors import KDForgeError


class Teacher(nn.Module):
    """A tiny two-layer net with a named hidden layer (a tap) and a forward-call counter."""

    def __init__(self, width=16, classes=5):
        super().__init__()
        torch.manual_seed(3)
        self.body = nn.Sequential(nn.Linear(6, width), nn.ReLU())
        self.head = nn.Linear(width, classes)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.head(self.body(x))


def splits(n=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda rows: TensorData({"x": torch.randn(rows, 6, generator=g),  # noqa: E731
                                    "labels": torch.randint(0, 5, (rows,), generator=g)})
    return {"train": make(n), "test": make(20)}


def build(tmp_path, teacher, data, settings=None, name="cache", **kw):
    settings = settings or CacheSettings()
    fingerprints = {"teacher": teacher_fingerprint(teacher), "data": fingerprint_splits(data, ["x"])}
    path = tmp_path / name
    status = write_cache(teacher, data, path, settings, fingerprints, ["x"], {"hidden": "body"}, batch_size=8,
                         chunk_rows=16, extra={"teacher": {"params": 123}}, **kw)
    return path, status, fingerprints


@torch.no_grad()
def reference(teacher, data, batch_size=8):
    """The teacher's logits over `data` in the batches the store was built with (bit-identical numerics)."""
    x = data.tensors["x"]
    return torch.cat([teacher(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


class FakeAccelerator:
    device = torch.device("cpu")


def cached(path, **kw):
    source = CachedTeacher(CacheStore(path), ["x"], **kw)
    source.prepare(FakeAccelerator())
    return source


def test_full_logits_and_features_round_trip_exactly(tmp_path):
    teacher, data = Teacher(), splits()
    path, status, _ = build(tmp_path, teacher, data, CacheSettings(features=("hidden",)))
    assert status == "built" and not partial_dir(path).exists()
    source = cached(path, taps={"hidden": "body"})
    rows = torch.tensor([7, 3, 41, 0])
    out = source(data["train"][rows])
    assert torch.equal(out.logits, reference(teacher, data["train"])[rows])
    with torch.no_grad():
        x = data["train"].tensors["x"]
        hidden = torch.cat([teacher.body(x[i:i + 8]) for i in range(0, 50, 8)])
    assert torch.equal(out.features["hidden"], hidden[rows])


def test_topk_round_trip_has_bounded_error(tmp_path):
    teacher, data = Teacher(width=32, classes=200), splits()
    path, _, _ = build(tmp_path, teacher, data, CacheSettings(logits="topk", k=20, dtype="float16"))
    source = cached(path)
    batch = data["train"][torch.arange(50)]
    logits, _ = source.read(batch["index"], batch)
    assert logits.values.dtype == torch.float16 and logits.values.shape == (50, 20)
    with torch.no_grad():
        p = torch.softmax(teacher(batch["x"]), -1)
    q = reconstruct_log_probs(logits).exp()
    tail_mass = 1 - p.gather(-1, logits.indices.long()).sum(-1)
    assert ((p - q).abs().sum(-1) / 2 <= tail_mass + 2e-3).all()
    assert torch.equal(source(batch).logits.argmax(-1), p.argmax(-1))


def test_bfloat16_values_survive_the_npy_store(tmp_path):
    teacher, data = Teacher(), splits()
    path, _, _ = build(tmp_path, teacher, data, CacheSettings(dtype="bfloat16"))
    batch = data["train"][torch.arange(10)]
    expected = reference(teacher, data["train"])[:10].to(torch.bfloat16).float()
    assert torch.equal(cached(path)(batch).logits, expected)


def test_shuffled_batches_get_their_own_outputs(tmp_path):
    teacher, data = Teacher(), splits()
    path, _, _ = build(tmp_path, teacher, data)
    source = cached(path)
    # rows stored in a different order than they are read, and the dataset itself permuted (ids travel along)
    permuted = data["train"].subset(torch.randperm(50, generator=torch.Generator().manual_seed(1)))
    expected = reference(teacher, data["train"])
    for _, batch in zip(range(8), iterate_batches(permuted, 7, seed=5), strict=False):
        assert torch.equal(source(batch).logits, expected[batch["index"]])
        with torch.no_grad():
            assert torch.allclose(source(batch).logits, teacher(batch["x"]), rtol=0, atol=1e-6)


def test_sparse_unordered_sample_ids_are_looked_up(tmp_path):
    teacher, data = Teacher(), splits()
    ids = torch.randperm(50, generator=torch.Generator().manual_seed(2)) * 3 + 7  # not 0..N-1, not sorted
    data["train"] = TensorData({**data["train"].tensors, "index": ids})
    path, _, _ = build(tmp_path, teacher, data)
    source = cached(path)
    expected = reference(teacher, data["train"])
    rows = torch.tensor([5, 0, 49, 17])
    assert torch.equal(source(data["train"][rows]).logits, expected[rows])
    missing = data["train"][rows]
    missing["index"] = torch.tensor([7, 8, 10, 1000])
    with pytest.raises(CacheError, match=r"sample ids \[8, 1000\] are not in the cache"):
        source(missing)


def test_inputs_paired_with_another_samples_id_are_refused(tmp_path):
    teacher, data = Teacher(), splits()
    path, _, _ = build(tmp_path, teacher, data)
    source = cached(path)
    batch = data["train"][torch.arange(8)]
    batch["x"] = batch["x"][torch.tensor([1, 0, 2, 3, 4, 5, 6, 7])]  # contents moved, ids did not
    with pytest.raises(CacheError, match=r"inputs of samples \[0, 1\] differ.*augmented"):
        source(batch)
    augmented = data["train"][torch.arange(8)]
    augmented["x"] = augmented["x"] + 0.01 * torch.randn_like(augmented["x"])
    with pytest.raises(CacheError, match="augment"):
        source(augmented)
    unknown = data["train"][torch.arange(4)]
    unknown["index"] = torch.tensor([0, 1, 2, 999])
    with pytest.raises(CacheError, match=r"sample ids \[999\] are not in the cache"):
        source(unknown)


def test_fingerprint_mismatch_is_an_error_that_names_what_differs(tmp_path):
    teacher, data = Teacher(), splits()
    path, _, fingerprints = build(tmp_path, teacher, data)
    store = CacheStore(path)
    store.check(fingerprints)  # the same teacher and data pass
    other = Teacher()
    with torch.no_grad():
        other.head.weight.add_(0.1)
    with pytest.raises(CacheError, match="another teacher"):
        store.check({"teacher": teacher_fingerprint(other)})
    reshuffled = splits(seed=1)
    with pytest.raises(CacheError, match="other data"):
        store.check({"data": fingerprint_splits(reshuffled, ["x"])})
    # the same rows with ids re-paired to other contents: also other data
    swapped = {**data, "train": TensorData({**data["train"].tensors, "index": torch.arange(50).flip(0)})}
    with pytest.raises(CacheError, match="other data"):
        store.check({"data": fingerprint_splits(swapped, ["x"])})
    # building into it for another teacher needs overwrite
    with pytest.raises(CacheError, match="another teacher.*--overwrite"):
        build(tmp_path, other, data)
    assert build(tmp_path, other, data, overwrite=True)[1] == "built"
    assert build(tmp_path, other, data)[1] == "up to date"


def test_a_flipped_byte_or_a_truncated_file_is_detected_and_named(tmp_path):
    teacher, data = Teacher(), splits()
    path, _, _ = build(tmp_path, teacher, data)
    target = path / "train" / "logits.npy"
    blob = bytearray(target.read_bytes())
    blob[-3] ^= 0x01
    target.write_bytes(bytes(blob))
    with pytest.raises(CacheError, match=r"train/logits.npy is corrupted \(checksum mismatch\)"):
        CacheStore(path)
    target.write_bytes(bytes(blob[:-40]))
    with pytest.raises(CacheError, match="train/logits.npy is truncated"):
        CacheStore(path, verify=False)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(CacheError, match="manifest.json is corrupted"):
        CacheStore(path)


class Interrupt(Exception):
    pass


def test_an_interrupted_build_leaves_no_store_and_resumes(tmp_path, monkeypatch):
    data = splits(n=64)
    reference, _, _ = build(tmp_path, Teacher(), data, name="reference")

    teacher = Teacher()
    original = Teacher.forward

    def dies_after_5_calls(self, x):
        if self.calls >= 5:
            raise Interrupt
        return original(self, x)

    monkeypatch.setattr(Teacher, "forward", dies_after_5_calls)
    with pytest.raises(Interrupt):
        build(tmp_path, teacher, data)
    monkeypatch.setattr(Teacher, "forward", original)
    path = tmp_path / "cache"
    assert not path.exists() and partial_dir(path).is_dir()
    with pytest.raises(KDForgeError, match="interrupted build.*kdforge cache"):
        CacheStore(path)

    teacher.calls = 0
    assert build(tmp_path, teacher, data)[1] == "resumed"
    # 64 + 20 rows in batches of 8 = 11 forwards, plus 2 probes; the 2 chunks done before the kill are skipped
    assert teacher.calls < 11
    for rel in ("train/logits.npy", "test/logits.npy", "train/hashes.npy"):
        assert (path / rel).read_bytes() == (reference / rel).read_bytes(), rel


def test_an_interrupted_build_for_another_teacher_starts_over(tmp_path, monkeypatch):
    data = splits()
    first = Teacher()
    original = Teacher.forward

    def dies_after_3_calls(self, x):
        if self.calls >= 3:
            raise Interrupt
        return original(self, x)

    monkeypatch.setattr(Teacher, "forward", dies_after_3_calls)
    with pytest.raises(Interrupt):
        build(tmp_path, first, data)
    monkeypatch.undo()
    assert partial_dir(tmp_path / "cache").is_dir()
    second = Teacher(width=8)
    assert build(tmp_path, second, data)[1] == "built"
    expected = reference(second, data["train"])[:4]
    assert torch.equal(cached(tmp_path / "cache")(data["train"][torch.arange(4)]).logits, expected)


def test_missing_taps_and_inputs_are_refused_when_opening(tmp_path):
    teacher, data = Teacher(), splits()
    path, _, _ = build(tmp_path, teacher, data)
    with pytest.raises(CacheError, match=r"recipe.taps.teacher: \['hidden'\] are not in the teacher cache"):
        CachedTeacher(CacheStore(path), ["x"], taps={"hidden": "body"})
    with pytest.raises(CacheError, match="recipe.teacher.inputs"):
        CachedTeacher(CacheStore(path), ["input_ids"])


def test_replay_teacher_answers_for_cached_inputs_only(tmp_path):
    teacher, data = Teacher(), splits()
    path, _, _ = build(tmp_path, teacher, data)
    replay = ReplayTeacher(CacheStore(path), ["x"])
    assert sum(p.numel() for p in replay.parameters()) == 123
    x = torch.cat([data["test"].tensors["x"][:5], data["train"].tensors["x"][10:13]])
    with torch.no_grad():
        assert torch.allclose(replay(x), teacher(x), rtol=0, atol=1e-6)
    with pytest.raises(CacheError, match="1 input\\(s\\) were never cached"):
        replay(torch.cat([x, torch.randn(1, 6)]))


def test_row_hashes_depend_on_every_bit_of_every_key():
    g = torch.Generator().manual_seed(0)
    batch = {"x": torch.randn(64, 6, generator=g), "ids": torch.randint(0, 30000, (64, 9), generator=g)}
    base = row_hashes(batch, ["x", "ids"])
    assert len(set(base.tolist())) == 64 and (base >= 0).all()
    nudged = {**batch, "x": batch["x"].clone()}
    nudged["x"][5, 2] = torch.nextafter(nudged["x"][5, 2], torch.tensor(1e9))
    changed = row_hashes(nudged, ["x", "ids"]) != base
    assert changed.tolist() == [i == 5 for i in range(64)]
    assert not torch.equal(row_hashes(batch, ["ids", "x"]), base)
    assert np.array_equal(row_hashes(batch, ["x"]).numpy(), row_hashes({"x": batch["x"].clone()}, ["x"]).numpy())
