"""Data a user already holds as TensorData (kdforge.data.adapters), and `py:` sources that return torch datasets."""

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from sklearn.datasets import load_wine
from torch.utils.data import DataLoader, Dataset, TensorDataset

from kdforge.data import as_tensor_data, bundle_from_splits, load_data
from kdforge.errors import KDForgeError, RecipeError
from kdforge.types import TensorData


def _wine() -> TensorDataset:
    bunch = load_wine()
    return TensorDataset(torch.from_numpy(bunch.data), torch.from_numpy(bunch.target))  # float64, int64


class Pairs(Dataset):
    def __init__(self, n: int = 10) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return np.full(3, i, dtype=np.float64), i % 2


class Records(Dataset):
    """Dict samples: token ids, a mask and a plain-number label."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int):
        return {"input_ids": torch.arange(4) + i, "attention_mask": torch.ones(4, dtype=torch.long), "labels": i % 3}


@dataclass
class Request:
    """Not the recipe's DataSpec: any object with DataRequest's attributes will do."""

    source: str
    args: dict = field(default_factory=dict)
    test_size: float = 0.25
    val_size: float = 0.0
    split_seed: int = 0
    standardize: bool | None = None
    student_labels: int | None = None
    transfer_set: bool = True


def test_tensor_data_and_dicts_keep_their_keys():
    data = TensorData({"x": torch.zeros(3, 2)})
    assert as_tensor_data(data, "train") is data
    named = as_tensor_data({"input_ids": np.arange(6).reshape(3, 2), "w": np.ones(3)}, "train")
    assert named.tensors["input_ids"].dtype == torch.int64 and named.tensors["w"].dtype == torch.float32
    assert set(named.tensors) == {"input_ids", "w", "index"} and named.name == "train"


def test_pairs_are_float32_features_and_int64_class_ids():
    data = as_tensor_data((np.ones((4, 2), dtype=np.float64), [0.0, 1.0, 1.0, 2.0]), "train")
    assert data.tensors["x"].dtype == torch.float32 and data.tensors["labels"].tolist() == [0, 1, 1, 2]
    with pytest.raises(KDForgeError, match="train: labels must be integer class ids"):
        as_tensor_data((np.ones((2, 2)), np.array([0.5, 1.0])), "train")


def test_tensor_dataset_from_scikit_learn_wine():
    data = as_tensor_data(_wine(), "train")
    bunch = load_wine()
    assert data.tensors["x"].dtype == torch.float32 and data.tensors["x"].shape == (178, 13)
    assert torch.equal(data.tensors["labels"], torch.from_numpy(bunch.target))
    only_x = as_tensor_data(TensorDataset(torch.zeros(5, 2)), "unlabelled")
    assert set(only_x.tensors) == {"x", "index"}
    with pytest.raises(KDForgeError, match="3 tensors per sample") as info:
        as_tensor_data(TensorDataset(torch.zeros(5, 2), torch.zeros(5), torch.zeros(5)), "train")
    assert "\n" not in str(info.value)


def test_map_style_datasets_of_tuples_and_of_dicts():
    pairs = as_tensor_data(Pairs(), "train")
    assert pairs.tensors["x"].shape == (10, 3) and pairs.tensors["x"].dtype == torch.float32
    assert pairs.tensors["labels"].tolist() == [i % 2 for i in range(10)]
    records = as_tensor_data(Records(), "train")
    assert records.tensors["input_ids"].shape == (6, 4) and records.tensors["labels"].tolist() == [0, 1, 2, 0, 1, 2]
    assert torch.equal(records.tensors["input_ids"][5], torch.arange(4) + 5)


def test_data_loaders_are_read_once_in_order():
    wine = _wine()
    data = as_tensor_data(DataLoader(wine, batch_size=32), "train")
    assert torch.equal(data.tensors["x"], wine.tensors[0].float())
    assert torch.equal(data.tensors["labels"], wine.tensors[1])
    records = as_tensor_data(DataLoader(Records(), batch_size=4), "train")  # dict batches
    assert torch.equal(records.tensors["labels"], as_tensor_data(Records(), "train").tensors["labels"])


@pytest.mark.parametrize("obj", ["digits.csv", np.zeros((3, 2)), 7, iter([(1, 0)]), TensorDataset])
def test_other_objects_are_refused_in_one_line(obj):
    with pytest.raises(KDForgeError, match=r"^train: cannot use .* as data; give a TensorData.*DataLoader\.$") as info:
        as_tensor_data(obj, "train")
    assert "\n" not in str(info.value)


def test_samples_that_do_not_line_up_are_one_line_errors():
    class Ragged(Records):
        def __getitem__(self, i):
            return {"input_ids": torch.arange(4 + i), "labels": 0}

    for bad, match in ((Ragged(), "'input_ids' differ in shape"), ([{"a": 1}, (1, 2), {"a": 2}], "samples are")):
        with pytest.raises(KDForgeError, match=match) as info:
            as_tensor_data(bad, "train")
        assert "\n" not in str(info.value)


def test_bundle_from_splits():
    x = np.random.default_rng(0).normal(size=(20, 4))
    bundle = bundle_from_splits({"train": (x, np.arange(20) % 2), "test": _wine()}, "data")
    assert bundle.info.input_shape == (4,) and bundle.info.num_classes == 3  # wine's class 2 counts too
    assert bundle.teacher_train is bundle.student_train is bundle.scratch_train and bundle.val is None
    assert (bundle.teacher_train.name, bundle.test.name) == ("train", "test")
    with pytest.raises(KDForgeError, match=r"^data: got splits \['test', 'train', 'valid'\]; give 'train' and "
                                           r"'test', and optionally 'val'\.$"):
        bundle_from_splits({"train": (x, x[:, 0] > 0), "test": (x, x[:, 0] > 0), "valid": (x, x[:, 0] > 0)}, "data")
    with pytest.raises(KDForgeError, match=r"data\['test'\]: cannot use str"):
        bundle_from_splits({"train": (x, np.arange(20) % 2), "test": "test.csv"}, "data")


WINE_SOURCE = """import torch
from sklearn.datasets import load_wine
from torch.utils.data import DataLoader, TensorDataset


def _wine(rows):
    bunch = load_wine()
    x, y = torch.from_numpy(bunch.data).float(), torch.from_numpy(bunch.target)
    return TensorDataset(x[rows], y[rows])


def splits():
    rows = torch.randperm(178, generator=torch.Generator().manual_seed(0))
    return {"train": _wine(rows[:140]), "test": DataLoader(_wine(rows[140:]), batch_size=16)}


def whole():
    return _wine(torch.arange(178))


def tokens():
    ids = torch.arange(40).reshape(10, 4)
    labels = torch.arange(10) % 2
    return {"train": {"input_ids": ids[:8], "labels": labels[:8]},
            "test": {"input_ids": ids[8:], "labels": labels[8:]}}


def unusable():
    return "wine.csv"
"""


def test_py_source_returning_torch_datasets(tmp_path):
    (tmp_path / "kdf_wine_source.py").write_text(WINE_SOURCE)
    data = load_data(Request(source="py:kdf_wine_source:splits"), base_dir=tmp_path)
    assert (len(data.teacher_train), len(data.test), data.val) == (140, 38, None)
    assert data.info.input_shape == (13,) and data.info.num_classes == 3
    assert data.teacher_train.tensors["x"].dtype == torch.float32
    assert data.test.tensors["labels"].dtype == torch.int64
    bunch = load_wine()
    first = data.teacher_train.tensors["x"][0].double().numpy()  # py: sources are not standardised by default
    assert np.isclose(bunch.data, first, atol=1e-4).all(axis=1).any()

    whole = load_data(Request(source="py:kdf_wine_source:whole", standardize=True, student_labels=30),
                      base_dir=tmp_path)  # one dataset: split and standardised like (X, y) arrays
    assert len(whole.teacher_train) + len(whole.test) == 178 and len(whole.scratch_train) == 30
    assert torch.allclose(whole.teacher_train.tensors["x"].mean(0), torch.zeros(13), atol=1e-4)

    tokens = load_data(Request(source="py:kdf_wine_source:tokens"), base_dir=tmp_path)  # named tensors, as given
    assert tokens.info.input_shape == () and tokens.info.num_classes == 2
    assert torch.equal(tokens.test.tensors["input_ids"], torch.arange(32, 40).reshape(2, 4))

    with pytest.raises(RecipeError, match=r"^recipe.data.source: cannot use str as data; give a TensorData") as info:
        load_data(Request(source="py:kdf_wine_source:unusable"), base_dir=tmp_path, where="recipe.data")
    assert "\n" not in str(info.value)


def test_messages_name_the_callers_field():
    with pytest.raises(RecipeError, match=r"^data.args: built-in source sklearn:iris takes no arguments"):
        load_data(Request(source="sklearn:iris", args={"n": 1}))
    with pytest.raises(RecipeError, match=r"^recipe.data.args: built-in source sklearn:iris takes no arguments"):
        load_data(Request(source="sklearn:iris", args={"n": 1}), where="recipe.data")
    with pytest.raises(RecipeError, match=r"^recipe.data.student_labels: 2 labelled samples cannot cover 3"):
        load_data(Request(source="sklearn:iris", student_labels=2), where="recipe.data")
