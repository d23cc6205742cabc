"""Recompute tests/data/golden_losses.json: every registered loss's value on fixed tensors.

Run only on purpose, after a change that is meant to alter a loss's value, and say why in the commit:

    python -m tests.update_golden            # rewrite the file
    python -m tests.update_golden --check    # print what would change, write nothing

`tests/test_golden.py` recomputes the same values and fails on any difference, and on any registered loss
that has no value in the file. Tests never write this file (the torchdistill trap).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import torch

from kdforge.losses import LOSSES, Outputs, Targets

GOLDEN_PATH = Path(__file__).resolve().parent / "data" / "golden_losses.json"
BATCH, CLASSES = 6, 5
FEATURE_SHAPE = (8, 4, 4)  # the loss contract's standard "feat" tap, per sample (and "head2": (B, K))


def _fixed(shape: tuple[int, ...], phase: float, scale: float = 1.0) -> torch.Tensor:
    """Deterministic, irregular values in [-scale, scale) that depend on no random generator: the fractional
    part of 43758.5453 · sin(12.9898 · i + phase) (a classic hash), computed in float64."""
    n = math.prod(shape)
    x = torch.sin(torch.arange(n, dtype=torch.float64) * 12.9898 + phase) * 43758.5453
    return (scale * (2 * (x - x.floor()) - 1)).float().reshape(shape)


def golden_inputs() -> tuple[Outputs, Outputs, Targets]:
    """The fixed student and teacher outputs and targets every golden value is computed on."""
    student = Outputs(logits=_fixed((BATCH, CLASSES), 0.0, 2.0),
                      features={"feat": _fixed((BATCH, *FEATURE_SHAPE), 0.5)})
    if "views" in {f.name for f in dataclasses.fields(Outputs)}:  # extra dropout views (SD-Dropout), when supported
        student.views = [_fixed((BATCH, CLASSES), 1.3, 2.0)]
    teacher = Outputs(logits=_fixed((BATCH, CLASSES), 2.1, 3.0),
                      features={"feat": _fixed((BATCH, *FEATURE_SHAPE), 1.7, 1.5)})
    # a logits-shaped tap, as in the loss contract (a second head's output: rocket launching's booster)
    student.features["head2"] = _fixed((BATCH, CLASSES), 0.9, 2.5)
    teacher.features["head2"] = _fixed((BATCH, CLASSES), 2.9, 2.5)
    targets = Targets(labels=torch.tensor([0, 3, 1, 4, 2, 3]), index=torch.arange(BATCH))
    return student, teacher, targets


def golden_value(name: str) -> float:
    """The loss built from its registered example, on the golden inputs. Parameters a loss initialises
    randomly (projectors, memory banks) and any sampling it does come from the seeded global generator."""
    torch.manual_seed(0)
    loss = LOSSES.get(name)(**LOSSES.info(name).example)
    with torch.no_grad():
        return float(loss(*golden_inputs()))


def compute_all() -> dict[str, float]:
    return {name: golden_value(name) for name in LOSSES.names()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.update_golden", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="show the differences, write nothing")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    values = compute_all()
    old = json.loads(GOLDEN_PATH.read_text())["values"] if GOLDEN_PATH.is_file() else {}
    for name in sorted(set(values) | set(old)):
        before, after = old.get(name), values.get(name)
        if before != after:
            sys.stdout.write(f"{name}: {before!r} -> {after!r}\n")
    if args.check:
        return 0
    GOLDEN_PATH.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "about": "Loss values on fixed tensors (tests/update_golden.py). Regenerate only on purpose: "
                 "python -m tests.update_golden",
        "torch": torch.__version__.split("+")[0],
        "values": values,
    }
    GOLDEN_PATH.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    sys.stdout.write(f"wrote {len(values)} values to {GOLDEN_PATH}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
