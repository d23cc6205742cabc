"""The standard surrogate: CART (scikit-learn's `DecisionTreeClassifier`) fitted on teacher-labelled inputs.

Greedy top-down splitting by impurity decrease; depth- or leaf-limited. This is the baseline the LRH distiller
must beat at matched size (PAC_DISTILLATION.md 4.3(a)).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils import check_random_state

from kdforge.trees.base import TeacherTreeEstimator, check_int
from kdforge.trees.tree import from_sklearn


class SurrogateTree(TeacherTreeEstimator):
    """CART fitted on teacher labels.

    Args:
        teacher: An `nn.Module` or a callable X -> scores.
        sampler: Callable (n, rng) -> inputs; without it the pool X (less a fidelity hold-out) is labelled.
        max_depth, max_leaf_nodes, min_samples_leaf, criterion: Passed to `DecisionTreeClassifier`.
        n_samples: Inputs drawn from the sampler for fitting.
        n_fidelity: Fresh inputs for the fidelity estimate (from the sampler; from a pool: at most a fifth).
        confidence: Level of the one-sided fidelity bound.
        random_state: Seed.

    Attributes:
        tree_, classes_, n_features_in_, fidelity_, fidelity_lower_, n_fidelity_: As in `LRHTreeDistiller`.
        n_samples_: {"labelled": ..., "fidelity": ...}.
        estimator_: The fitted `DecisionTreeClassifier`.
    """

    def __init__(self, teacher: Any = None, *, sampler: Callable | None = None, max_depth: int | None = None,
                 max_leaf_nodes: int | None = None, min_samples_leaf: int = 1, criterion: str = "gini",
                 n_samples: int = 6000, n_fidelity: int = 20000, confidence: float = 0.95,
                 random_state: int | None = None) -> None:
        self.teacher = teacher
        self.sampler = sampler
        self.max_depth = max_depth
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.criterion = criterion
        self.n_samples = n_samples
        self.n_fidelity = n_fidelity
        self.confidence = confidence
        self.random_state = random_state

    def fit(self, X: Any = None, y: Any = None) -> SurrogateTree:
        """Label inputs with the teacher and fit CART to them; y is ignored."""
        name = type(self).__name__
        self._check_teacher()
        if self.max_depth is not None:
            check_int(self.max_depth, "max_depth", name, 1)
        if self.max_leaf_nodes is not None:
            check_int(self.max_leaf_nodes, "max_leaf_nodes", name, 2)
        check_int(self.n_samples, "n_samples", name, 1)
        check_int(self.n_fidelity, "n_fidelity", name, 0)
        random = check_random_state(self.random_state)
        rng = np.random.default_rng(random.randint(2**31))
        X_fit, X_fid = self._fit_inputs(X, rng)
        y_fit = self._teacher_labels(X_fit)
        self.estimator_ = DecisionTreeClassifier(
            criterion=self.criterion, max_depth=self.max_depth, max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf, random_state=random.randint(2**31),
        ).fit(X_fit, y_fit)
        tree = from_sklearn(self.estimator_.tree_)
        # sklearn counts only the classes it saw; place them at the teacher's class ids
        full = np.zeros((tree.n_nodes, len(self.classes_)))
        full[:, self.estimator_.classes_] = np.asarray(tree.value)
        tree.value = list(full)
        self.tree_ = tree
        self.n_samples_ = {"labelled": len(X_fit), "fidelity": 0 if X_fid is None else len(X_fid)}
        self._finish_fit(X_fid, self._teacher_labels(X_fid) if X_fid is not None else None)
        return self
