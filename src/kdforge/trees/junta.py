"""Junta distillation: a teacher that depends on only k of its n inputs, distilled into the exact tree over them.

The junta case study of Boix-Adsera, "Towards a theory of model distillation" (arXiv:2403.09053), as
reconstructed in PAC_DISTILLATION.md 3.2(2) [RECONSTRUCTED; the paper's body was not available]. A distiller
holds the network, so it can evaluate it at inputs of its choice (membership queries), which a learner from
random examples cannot:

1. Relevance. For every coordinate i, the influence Inf_i = P[f(x) != f(x')], where x' is x with coordinate i
   flipped (inputs in {-1,+1}) or redrawn from an independent sample (any other inputs), is estimated on
   `n_pairs` draws. On the uniform cube every relevant coordinate of a k-junta has flip influence >= 2^(1-k)
   and every irrelevant one has influence 0, so the default threshold tau = 2^-k (half the smallest
   relevant influence) separates them. With n_pairs = 8 ln(2n / delta) / tau (delta = 0.01) a multiplicative
   Chernoff bound puts each estimate on the right side of tau with probability >= 1 - delta / n [OURS].
   More than k coordinates above tau: the teacher is not a k-junta, and `fit` raises `NotAJuntaError`.
2. The function on the relevant set J. On {-1,+1} inputs: every one of the 2^|J| assignments of x_J is
   completed with `n_completions` draws of the other coordinates and labelled by the teacher (the truth table,
   queried; at least `n_dp` queries in all). Otherwise: `n_dp` draws are labelled and the literals of J are
   the thresholds where the teacher's label flips along one-feature sweeps (`literals.sensitivity_literals`,
   restricted to J). TREE-DP over
   *every* conjunction of J's literals (an exhaustive search that is cheap because |J| <= k) returns the
   smallest tree that agrees best (`size_tolerance`). The share of queries that disagree with the tree,
   `junta_error_`, measures how far the teacher is from a junta on J: above `max_error`, `fit` raises
   `NotAJuntaError` (many coordinates of tiny influence, such as a majority vote over all inputs, pass step 1
   but fail here).

Cost, every query counted in `n_queries_`: (n + 1) * n_pairs for the influences; on {-1,+1} inputs
2^|J| * max(n_completions, ceil(n_dp / 2^|J|)) for the tree; on other inputs n_dp for the tree plus the
sensitivity sweep, |J| * min(200, pool) * (<= 32 grid points), often the largest share; and the fidelity rows.
No labelled data. Without a sampler the fidelity rows are held out of the pool X before anything is drawn from
it (`_fit_inputs`, as in the other distillers), so the bound is about rows no step saw. What the notes
reconstruct as the paper's comparison: learning a k-junta from random examples takes about n^k time for the
best known algorithms, while the queries make it poly(n, 2^k).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.utils import check_random_state

from kdforge.errors import KDForgeError
from kdforge.trees.base import FRESH_DRAWS, TeacherTreeEstimator, check_fraction, check_int
from kdforge.trees.conjunctions import all_conjunctions
from kdforge.trees.dp import tree_dp
from kdforge.trees.literals import Literals, is_boolean_cube, sensitivity_literals

_DELTA = 0.01
_MAX_CONJUNCTIONS = 200_000


class NotAJuntaError(KDForgeError, ValueError):
    """The teacher depends on more than k inputs (or is far from any function of the relevant ones)."""


def default_threshold(k: int) -> float:
    """Half the smallest flip influence of a relevant coordinate of a k-junta on the uniform cube: 2^-k."""
    return 2.0 ** (-k)


def default_pairs(n_features: int, threshold: float, delta: float = _DELTA) -> int:
    """Draws per coordinate so each influence estimate lands on the right side of `threshold` with probability
    >= 1 - delta / n_features (multiplicative Chernoff, [OURS])."""
    return int(math.ceil(8.0 * math.log(2.0 * n_features / delta) / threshold))


class JuntaDistiller(TeacherTreeEstimator):
    """Find the k inputs a teacher depends on by querying it, and distil it into the exact tree over them.

    Args:
        teacher: An `nn.Module` or a callable X -> scores; it is queried at perturbed inputs.
        k: The largest number of relevant inputs accepted (the junta size).
        sampler: Callable (n, rng) -> (n, n_features) fresh inputs. Without it, `fit`'s X is a pool: up to a
            fifth of its rows are held out for the fidelity bound, and draws are taken from the rest (with
            replacement).
        threshold: Influence above which a coordinate is relevant; None: 2^-k (see the module docstring).
        n_pairs: Draws per coordinate for the influence estimates; None: 8 ln(2n / 0.01) / threshold.
        n_completions: Least number of completions per assignment of the relevant inputs ({-1,+1} inputs).
        n_dp: Teacher-labelled queries for the tree over J (at least this many on {-1,+1} inputs).
        n_thresholds: Sensitivity thresholds per relevant feature (inputs other than {-1,+1}).
        max_depth: Depth of the tree over J; None: |J|.
        max_error: Largest share of queries that may disagree with the tree before `fit` raises.
        size_tolerance: Keep the smallest tree whose agreement is within this fraction of the best.
        n_fidelity: Rows for the fidelity estimate and its Clopper-Pearson bound: fresh sampler draws, or rows
            held out of the pool X (at most a fifth of it), never used in fitting.
        confidence: Level of the one-sided fidelity bound.
        random_state: Seed (int) or None.

    Attributes:
        tree_: The distilled `Tree` (splits only on relevant inputs).
        relevant_: Indices of the relevant inputs J, by decreasing influence.
        influence_: (n_features,) estimated influence of every input.
        threshold_: The influence threshold used; n_pairs_: draws per coordinate.
        junta_error_: Share of the tree-fitting queries on which the teacher disagrees with the tree.
        n_queries_: Rows the teacher was asked about, by kind: `influence` (base and moved rows), `sweep`
            (the sensitivity thresholds on inputs other than {-1,+1}; 0 on the cube), `tree`, `fidelity`.
        n_samples_: Inputs drawn from the sampler or pool, by kind.
        fidelity_, fidelity_lower_, n_fidelity_: Agreement on the held-out rows and its lower confidence bound.
        fidelity_rows_: What those rows are (fresh sampler draws, or held-out rows of the pool X).
        classes_, n_features_in_, literals_.

    Example:
        >>> import numpy as np
        >>> from kdforge.trees import CubeSampler, JuntaDistiller
        >>> teacher = lambda X: X[:, 3] * X[:, 7]           # XOR of inputs 3 and 7 out of 20
        >>> est = JuntaDistiller(teacher, k=3, sampler=CubeSampler(20), random_state=0).fit()
        >>> sorted(est.relevant_.tolist()), est.tree_.n_leaves, est.fidelity_
        ([3, 7], 4, 1.0)
    """

    def __init__(self, teacher: Any = None, *, k: int = 4, sampler: Callable | None = None,
                 threshold: float | None = None, n_pairs: int | None = None, n_completions: int = 16,
                 n_dp: int = 2000, n_thresholds: int = 4, max_depth: int | None = None, max_error: float = 0.05,
                 size_tolerance: float = 0.005, n_fidelity: int = 20000, confidence: float = 0.95,
                 random_state: int | None = None) -> None:
        self.teacher = teacher
        self.k = k
        self.sampler = sampler
        self.threshold = threshold
        self.n_pairs = n_pairs
        self.n_completions = n_completions
        self.n_dp = n_dp
        self.n_thresholds = n_thresholds
        self.max_depth = max_depth
        self.max_error = max_error
        self.size_tolerance = size_tolerance
        self.n_fidelity = n_fidelity
        self.confidence = confidence
        self.random_state = random_state

    def _check_params(self) -> None:
        name = type(self).__name__
        self._check_teacher()
        check_int(self.k, "k", name, 1)
        if self.threshold is not None and not (isinstance(self.threshold, (int, float))
                                               and not isinstance(self.threshold, bool) and 0 < self.threshold < 1):
            raise ValueError(f"The 'threshold' parameter of {name} must be a float in (0, 1) or None. "
                             f"Got {self.threshold!r} instead.")
        if self.n_pairs is not None:
            check_int(self.n_pairs, "n_pairs", name, 1)
        for key in ("n_completions", "n_dp", "n_thresholds"):
            check_int(getattr(self, key), key, name, 1)
        if self.max_depth is not None:
            check_int(self.max_depth, "max_depth", name, 1)
        check_fraction(self.max_error, "max_error", name)
        check_fraction(self.size_tolerance, "size_tolerance", name)
        check_int(self.n_fidelity, "n_fidelity", name, 0)
        if not 0 < self.confidence < 1:
            raise ValueError(f"The 'confidence' parameter of {name} must be in (0, 1). Got {self.confidence!r}.")
        if self.sampler is not None and not callable(self.sampler):
            raise ValueError(f"The 'sampler' parameter of {name} must be a callable (n, rng) -> array.")

    def _draws(self, n: int, rng: np.random.Generator, X: np.ndarray | None) -> np.ndarray:
        if self.sampler is not None:
            return self._draw(n, rng, X)
        return X[rng.integers(0, len(X), size=n)]

    def _ask(self, X: np.ndarray, kind: str) -> np.ndarray:
        """Teacher labels on X, counted in `n_queries_[kind]`: the count is of the rows actually asked about."""
        self.n_queries_[kind] += len(X)
        return self._teacher_labels(X)

    def fit(self, X: Any = None, y: Any = None) -> JuntaDistiller:
        """Distil the teacher. X: pool of unlabelled inputs (or only its width, with a sampler); y is ignored."""
        self._check_params()
        name = type(self).__name__
        rng = np.random.default_rng(check_random_state(self.random_state).randint(2**31))
        self.n_queries_ = {"influence": 0, "sweep": 0, "tree": 0, "fidelity": 0}
        if self.sampler is None:  # split the pool: the bound is measured on rows no step was fitted on
            X, X_fid = self._fit_inputs(X, rng)  # sets fidelity_rows_: held-out rows of the pool
        else:
            X = self._validate_input(X, reset=True) if X is not None else None
            self._reset_classes()
            X_fid = None  # drawn fresh after the fit
            self.fidelity_rows_ = FRESH_DRAWS
        # the width fixes the default n_pairs; without X it comes from the first draw, which is kept as a base row
        first = self._draw(1, rng, None) if X is None else None
        n = X.shape[1] if X is not None else first.shape[1]
        if X is None:
            self.n_features_in_ = n
        self.threshold_ = float(self.threshold) if self.threshold is not None else default_threshold(self.k)
        self.n_pairs_ = int(self.n_pairs) if self.n_pairs is not None else default_pairs(n, self.threshold_)

        if first is None:
            base = self._draws(self.n_pairs_, rng, X)
        else:
            base = first if self.n_pairs_ == 1 else np.concatenate([first, self._draws(self.n_pairs_ - 1, rng, X)])
        boolean = is_boolean_cube(base)
        other = None if boolean else self._draws(self.n_pairs_, rng, X)
        y_base = self._ask(base, "influence")
        influence = np.zeros(n)
        for i in range(n):
            moved = base.copy()
            moved[:, i] = -moved[:, i] if boolean else other[:, i]
            influence[i] = float(np.mean(self._ask(moved, "influence") != y_base))
        self.influence_ = influence
        order = np.argsort(-influence, kind="stable")
        relevant = order[influence[order] >= self.threshold_]
        self.relevant_ = relevant
        if len(relevant) > self.k:
            top = ", ".join(f"x[{i}] {influence[i]:.3f}" for i in relevant[:8])
            raise NotAJuntaError(
                f"{name}: the teacher is not a {self.k}-junta: {len(relevant)} inputs have influence >= "
                f"{self.threshold_:.4g} ({top}{', ...' if len(relevant) > 8 else ''}). Raise 'k' (to at least "
                f"{len(relevant)}), raise 'threshold', or distil with LRHTreeDistiller (tree recipe: method: lrh)."
            )

        Z, labels, literals, tree_inputs = self._tree_samples(relevant, boolean, rng, X, n)
        depth = self.max_depth if self.max_depth is not None else max(1, len(relevant))
        depth = min(depth, len(literals))
        n_conj = sum(2**i * math.comb(len(literals), i) for i in range(depth + 1))
        if n_conj > _MAX_CONJUNCTIONS:
            raise ValueError(f"{name}: the tree over the {len(relevant)} relevant inputs would search {n_conj:,} "
                             f"conjunctions ({len(literals)} literals, depth {depth}); lower 'n_thresholds' or "
                             "'max_depth'.")
        self.literals_ = literals
        if len(literals) == 0:  # a constant teacher: one leaf
            rows = np.zeros((1, 0), dtype=np.int8)
            result = tree_dp(rows, Z, labels, len(self.classes_), 1)
            self.tree_ = result.build(1, literals)
        else:
            result = tree_dp(all_conjunctions(len(literals), depth), Z, labels, len(self.classes_),
                             2**depth)
            self.tree_ = result.build(result.smallest_budget(self.size_tolerance), literals)
        self.depth_ = depth
        self.junta_error_ = float(np.mean(self.tree_.predict_proba(tree_inputs).argmax(axis=1) != labels))
        if self.junta_error_ > self.max_error:
            raise NotAJuntaError(
                f"{name}: the teacher is not a function of its {len(relevant)} most influential inputs "
                f"({', '.join(f'x[{i}]' for i in relevant) or 'none'}): the best tree over them disagrees with it on "
                f"{self.junta_error_:.1%} of {len(labels)} queries (max_error={self.max_error}). Many inputs of "
                "small influence (e.g. a vote over all inputs) look like this: lower 'threshold', raise 'k', or "
                "distil with LRHTreeDistiller (tree recipe: method: lrh)."
            )
        if self.sampler is not None and self.n_fidelity:
            X_fid = self._draw(self.n_fidelity, rng, X)
        y_fid = self._ask(X_fid, "fidelity") if X_fid is not None else None
        self.n_samples_ = {"influence": self.n_pairs_ * (1 if boolean else 2), "tree": len(labels),
                           "fidelity": 0 if X_fid is None else len(X_fid)}
        self._finish_fit(X_fid, y_fid)
        return self

    def _tree_samples(self, relevant: np.ndarray, boolean: bool, rng: np.random.Generator, X: np.ndarray | None,
                      n: int) -> tuple[np.ndarray, np.ndarray, Literals, np.ndarray]:
        """(literal matrix Z, teacher labels, literals over J, the inputs) to fit the tree over J on."""
        if boolean:
            m = len(relevant)
            table = np.array(np.meshgrid(*[[-1.0, 1.0]] * m, indexing="ij")).reshape(m, -1).T if m else \
                np.zeros((1, 0))
            per_row = max(self.n_completions, math.ceil(self.n_dp / len(table)))
            inputs = self._draws(len(table) * per_row, rng, X)
            inputs[:, relevant] = np.repeat(table, per_row, axis=0)
            literals = Literals(relevant.astype(np.int64), np.zeros(m))
        else:
            inputs = self._draws(self.n_dp, rng, X)
            pool = inputs if X is None else X
            literals = sensitivity_literals(pool, lambda A: self._ask(A, "sweep"), self.n_thresholds, rng=rng,
                                            features=relevant)
        labels = self._ask(inputs, "tree")
        return literals.transform(inputs), labels, literals, inputs
