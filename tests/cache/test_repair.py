"""A damaged store is rebuilt by the command its error names (issue 16, item 3): `kdforge cache RECIPE --overwrite`
rebuilds it all, a plain `kdforge cache RECIPE` rebuilds only the damaged split, and NaN bytes in a store read with
`verify: false` are named as the cache's, not left to surface as a non-finite loss."""

import json

import numpy as np
from tests.cache.test_pipeline import cli, iris_recipe


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_overwrite_rebuilds_a_truncated_store(tmp_path, capsys):
    recipe = iris_recipe(tmp_path, "teacher.safetensors")
    assert cli(["cache", str(recipe), "--quiet"], capsys)[0] == 0
    good = (tmp_path / "cache" / "train" / "logits.npy").read_bytes()
    _truncate(tmp_path / "cache" / "train" / "logits.npy")
    code, _, err = cli(["distill", str(recipe), "--out", str(tmp_path / "run"), "--quiet"], capsys)
    assert code == 2 and "train/logits.npy is truncated" in err and "kdforge cache RECIPE" in err
    code, out, _ = cli(["cache", str(recipe), "--quiet", "--overwrite"], capsys)
    assert code == 0 and "teacher cache built" in out, out
    assert (tmp_path / "cache" / "train" / "logits.npy").read_bytes() == good
    assert cli(["distill", str(recipe), "--out", str(tmp_path / "run"), "--quiet", "--overwrite"], capsys)[0] == 0


def test_plain_cache_repairs_only_the_damaged_split(tmp_path, capsys):
    recipe = iris_recipe(tmp_path, "teacher.safetensors")
    assert cli(["cache", str(recipe), "--quiet"], capsys)[0] == 0
    store = tmp_path / "cache"
    manifest = json.loads((store / "manifest.json").read_text())
    good = (store / "val" / "logits.npy").read_bytes()
    before = {p: (store / p).stat().st_mtime_ns for p in manifest["files"]}
    raw = bytearray(good)
    raw[-3] ^= 0xFF  # same size, other bytes: only the checksum tells
    (store / "val" / "logits.npy").write_bytes(bytes(raw))
    code, out, _ = cli(["cache", str(recipe), "--quiet"], capsys)
    assert code == 0 and "teacher cache repaired (val)" in out, out
    assert (store / "val" / "logits.npy").read_bytes() == good
    after = json.loads((store / "manifest.json").read_text())
    assert after["files"] == manifest["files"]  # the same bytes as the first build
    untouched = [p for p in manifest["files"] if not p.startswith("val/")]
    assert all((store / p).stat().st_mtime_ns == before[p] for p in untouched)  # train and test were not rewritten
    assert not list(tmp_path.glob(".cache.*"))  # no repair or partial folder left
    code, out, _ = cli(["cache", str(recipe), "--quiet"], capsys)
    assert code == 0 and "teacher cache up to date" in out


def test_nan_bytes_in_an_unverified_store_are_named_as_the_caches(tmp_path, capsys):
    recipe = iris_recipe(tmp_path, "teacher.safetensors", verify=False)
    assert cli(["cache", str(recipe), "--quiet"], capsys)[0] == 0
    logits = np.load(tmp_path / "cache" / "train" / "logits.npy", mmap_mode="r+")
    logits[3, 1] = np.nan  # in place: same size, and verify: false skips the checksums
    logits.flush()
    del logits
    code, _, err = cli(["distill", str(recipe), "--out", str(tmp_path / "run"), "--quiet"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "train/logits.npy holds NaN" in err and "verify: false" in err and "kdforge cache RECIPE" in err
    code, out, _ = cli(["cache", str(recipe), "--quiet"], capsys)  # the checksum finds it: repaired
    assert code == 0 and "repaired (train)" in out
    assert cli(["distill", str(recipe), "--out", str(tmp_path / "run"), "--quiet", "--overwrite"], capsys)[0] == 0
