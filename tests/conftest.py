"""Shared fixtures: one torch thread (2 shared cores), deterministic seeds, tiny models and data."""

import os
import random

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network; a hub name fails fast

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def tiny_recipe_dict():
    """A recipe that trains in about a second: iris, MLP teacher trained first, smaller MLP student."""
    return {
        "name": "tiny",
        "seeds": [0],
        "data": {"source": "sklearn:iris", "test_size": 0.3, "val_size": 0.2},
        "teacher": {"model": "builtin:mlp", "args": {"hidden": [32]},
                    "train": {"epochs": 5, "lr": 0.01, "batch_size": 16, "progress": False}},
        "student": {"model": "builtin:mlp", "args": {"hidden": [4]}},
        "losses": [{"name": "kd", "weight": 0.9, "temperature": 2.0}, {"name": "ce", "weight": 0.1}],
        "train": {"epochs": 3, "batch_size": 16, "lr": 0.01, "progress": False},
        "baseline": True,
    }
