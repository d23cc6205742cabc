"""Every registered loss keeps its value on fixed tensors (tests/data/golden_losses.json).

A change that alters what a loss computes fails here, loudly. If the change is intended, regenerate the file
with `python -m tests.update_golden` and say why in the commit. A loss with no golden value fails too.
"""

import json

import pytest

from kdforge.losses import LOSSES
from tests.update_golden import GOLDEN_PATH, golden_value

GOLDEN = json.loads(GOLDEN_PATH.read_text())["values"]


@pytest.mark.parametrize("name", LOSSES.names())
def test_loss_matches_its_golden_value(name):
    assert name in GOLDEN, f"no golden value for loss {name!r}; run `python -m tests.update_golden` and commit it"
    assert golden_value(name) == pytest.approx(GOLDEN[name], rel=1e-5, abs=1e-6)


def test_golden_inputs_give_distinct_nonzero_values():
    """The fixed tensors exercise every teacher-driven loss (a value of exactly 0 would test nothing)."""
    assert all(GOLDEN[name] != 0.0 for name in LOSSES.names() if name in GOLDEN)
