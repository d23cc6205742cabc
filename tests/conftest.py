"""Shared fixtures: one torch thread (2 shared cores), deterministic seeds, tiny models and data."""

import os
import random

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network; a hub name fails fast

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from tests.tiny import tiny_recipe  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def tiny_recipe_dict():
    """A recipe that trains in about a second (tests/tiny.py); each test gets its own copy to change."""
    return tiny_recipe()
