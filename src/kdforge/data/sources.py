"""The data-source registries, and scikit-learn's bundled datasets (no download) as `sklearn:<name>`.

Two registries, because the two kinds are called differently: a `DATASETS` loader takes no arguments and returns
`ArrayData` that `load_data` splits and standardises; a `TEXT_DATASETS` source (`data.source: text:<name>`) takes
its recipe arguments plus the split settings and returns `(DataBundle, tokenizer)` already split and encoded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdforge.registry import DATASETS, EntryInfo, Registry

TEXT_DATASETS: Registry[Callable[..., Any], EntryInfo] = Registry("text source")  # filled by .text, .retrieval, .lm


@dataclass
class ArrayData:
    """Features and integer labels as arrays; `input_shape` is the shape of one sample."""

    x: np.ndarray
    y: np.ndarray
    input_shape: tuple[int, ...]
    standardize: bool  # the sensible default for this source (tabular: yes; images in [0, 1]: no)
    class_names: tuple[str, ...] | None = None  # one per class id (scikit-learn's target_names)


@DATASETS.register("sklearn:digits")
def digits() -> ArrayData:
    """8x8 grey-scale handwritten digits, 1797 images, 10 classes; pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]  # (N, 1, 8, 8)
    return ArrayData(x, bunch.target.astype(np.int64), (1, 8, 8), standardize=False,
                     class_names=tuple(str(c) for c in bunch.target_names))


def _tabular(loader) -> ArrayData:
    bunch = loader()
    x = bunch.data.astype(np.float32)
    return ArrayData(x, bunch.target.astype(np.int64), (x.shape[1],), standardize=True,
                     class_names=tuple(str(c) for c in bunch.target_names))


@DATASETS.register("sklearn:breast_cancer")
def breast_cancer() -> ArrayData:
    """Wisconsin breast cancer: 569 samples, 30 features, 2 classes."""
    from sklearn.datasets import load_breast_cancer

    return _tabular(load_breast_cancer)


@DATASETS.register("sklearn:wine")
def wine() -> ArrayData:
    """Wine recognition: 178 samples, 13 features, 3 classes."""
    from sklearn.datasets import load_wine

    return _tabular(load_wine)


@DATASETS.register("sklearn:iris")
def iris() -> ArrayData:
    """Iris: 150 samples, 4 features, 3 classes."""
    from sklearn.datasets import load_iris

    return _tabular(load_iris)
