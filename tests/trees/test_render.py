"""Text rules, JSON, PNG and the fidelity statement."""

from __future__ import annotations

import json

import numpy as np

from kdforge.trees import SurrogateTree
from kdforge.trees.render import fidelity_statement

from .helpers import first_feature_teacher


def fitted():
    X = np.random.default_rng(0).normal(size=(1000, 3))
    return SurrogateTree(first_feature_teacher, max_depth=1, random_state=0).fit(X)


def test_text_rules_and_json():
    est = fitted()
    text = est.export_text(["a", "b", "c"])
    assert text.startswith("|--- a <= 0.3") and "class: 1" in text
    rules = est.export_rules(["a", "b", "c"])
    assert len(rules) == 2 and rules[0].startswith("IF a <= 0.3") and rules[1].endswith("samples)")
    tree = est.to_dict()
    assert tree["n_leaves"] == 2 and tree["root"]["feature"] == 0 and tree["root"]["left"]["leaf"]
    assert 0.99 < tree["fidelity"]["observed"] <= 1.0
    json.dumps(tree)  # JSON-ready


def test_save_writes_every_artifact(tmp_path):
    est = fitted()
    est.save(tmp_path, title="t")
    for name in ("tree.txt", "tree.json", "tree.png", "fidelity.txt"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "tree.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the 200 rows a fifth of the pool: held out, not fresh samples
    assert ("with 95% confidence, from 200 held-out rows of the pool X, never used in fitting"
            in (tmp_path / "fidelity.txt").read_text())


def test_fidelity_statement_wording():
    text = fidelity_statement(990, 1000, 0.9831, 0.95)
    assert text == ("agrees with the teacher on >= 98.31% of inputs with 95% confidence, from 1000 fresh samples "
                    "(observed agreement 99.00%)")
