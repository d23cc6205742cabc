"""The tiny recipe many tests run: iris, MLP teacher trained first, smaller MLP student (about a second)."""

import copy

_TINY = {
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


def tiny_recipe(**changes) -> dict:
    """A fresh copy of the tiny recipe with top-level keys replaced."""
    return {**copy.deepcopy(_TINY), **changes}
