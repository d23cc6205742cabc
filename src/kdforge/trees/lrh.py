"""LRH decision-tree distillation (Boix-Adsera, "Towards a theory of model distillation", arXiv:2403.09053, 2024).

https://arxiv.org/abs/2403.09053 ; author's code: github.com/eboix/theory-of-model-distillation

Under the linear representation hypothesis the network linearly represents every node conjunction of the tree
it computes. The distiller (PAC_DISTILLATION.md 2.2, 2.3):

1. phi(x) = the teacher's activations at `layers` (default: every leaf module, i.e. pre- and post-activation
   of each hidden layer and the output logit), standardised on the probe-train split.
2. Breadth-first over conjunctions: level 0 is the root; level l + 1 extends the *frontier* of level l by one
   literal (both signs, every free literal). Every candidate gets a ridge probe (one closed-form solve for all
   of them, `probes.py`) whose target is its +/-1 AND value; its validation MSE is the evidence that the
   network computes it.
   - practical variant (`top_k`, the author's code [CODE]): the frontier is the top_k candidates by
     validation error;
   - provable variant (`probe_mse`, Algorithm B [RECONSTRUCTED]): the frontier is every candidate whose
     validation error is <= probe_mse (held-out error; the reconstruction uses the training MSE, which can only
     keep more). With `probe_scale="variance"` (default) the error is MSE / Var(target), the fraction of
     variance unexplained, so one threshold means the same thing at every level: the variance of a level-l
     conjunction on the uniform cube falls from 1 (l = 1) to 4 * 2^-l (1 - 2^-l) (0.12 at l = 5), and a raw
     threshold that keeps the true level-1 nodes keeps every deep conjunction. `"raw"` is the old raw MSE.
     The frontier of level l is checked against the counting bound (m + 1) * 2^l of PAC_DISTILLATION.md 2.3(5)
     (m = width of phi): under the exact LRH on the uniform cube no more conjunctions can be represented, so a
     larger frontier means the threshold admits unrepresented conjunctions; it is cut to the bound (best
     first) with a warning, which keeps the polynomial probe count.
3. TREE-DP (`dp.py`) over *all* probed conjunctions on fresh teacher-labelled samples gives the best tree per
   leaf budget; the smallest tree within `size_tolerance` of the best agreement is kept (2.6).

Ranking (`rank_by`): the code ranks by raw validation MSE. With continuous literals, conjunctions cover very
different fractions of the data and a rare conjunction has a small MSE just by being almost constant, so
"fvu" ranks by MSE / variance of the target (1 - R^2). On the uniform Boolean cube every candidate of one level
has the same variance, and both rankings agree up to sampling noise. "auto" uses "mse" on the cube and "fvu"
otherwise, where "the cube" means entries +/-1 *with balanced marginals* (`literals.is_balanced_cube`): on a
skewed cube (P(x_j = +1) = 0.8) raw MSE favours near-empty conjunctions.
Candidates that are constant on the validation split (empty conjunctions) are never in a frontier.

LRH diagnostic (`lrh_diagnostic_`): per level, the fraction of variance unexplained (FVU) by the best probe of
each *represented* conjunction of that level: the planted tree's nodes when `reference_conjunctions` is given,
else the distilled tree's own nodes. FVU near 0 means the hypothesis holds there; a true node with a large FVU,
or outranked by many candidates, is why a tree was not recovered.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.utils import check_random_state

from kdforge.io import write_text
from kdforge.trees import render
from kdforge.trees.base import TeacherTreeEstimator, check_fraction, check_int
from kdforge.trees.conjunctions import and_values, extend
from kdforge.trees.dp import tree_dp
from kdforge.trees.literals import Literals, choose_literals, is_balanced_cube
from kdforge.trees.probes import RidgeProbes
from kdforge.trees.teachers import make_representation
from kdforge.trees.tree import Tree

_CHUNK = 4096


class LRHTreeDistiller(TeacherTreeEstimator):
    """Distil a network into an explicit decision tree by probing its activations for the tree's conjunctions.

    Args:
        teacher: An `nn.Module` or a callable X -> scores ((N,) / (N, 1) one logit, or (N, K)); it labels the
            samples the tree is assembled and evaluated on.
        layers: Dotted module names of an `nn.Module` teacher whose outputs, concatenated, form phi. Default:
            every leaf module (pre- and post-activations and the logit, as the author's code probes).
        representation: Instead of `layers`, a callable X -> (N, m) activations (any teacher, or a control
            such as a random-weight copy or the raw inputs).
        sampler: Callable (n, rng) -> (n, n_features) fresh unlabelled inputs. Without it, `fit`'s X is the
            pool the samples are split from.
        max_depth: Tree depth d >= 1 (the conjunction search goes d literals deep). None: grow d = 1, 2, ...
            up to `max_auto_depth` until the DP agreement stops improving (by less than 0.1%).
        max_leaf_nodes: Leaf budget of the DP; default 2**depth.
        top_k: Frontier size per level (practical variant; the author's runs use 10 to 1000).
        probe_mse: Threshold of the provable variant (set top_k=None to use it): on the fraction of variance
            unexplained with probe_scale='variance', on the raw validation MSE with 'raw'.
        probe_scale: 'variance' (default) or 'raw' (see the module docstring).
        ridge: Ridge penalty per probe-train sample (lambda = ridge * n_probe).
        n_probe, n_val, n_dp: Fresh samples for probe fitting, probe validation and the DP (teacher-labelled).
        n_fidelity: Fresh samples for the fidelity estimate and its Clopper-Pearson bound.
        literals: 'auto', 'boolean', 'quantile' or 'sensitivity' (see `kdforge.trees.literals`).
        n_thresholds: Thresholds per continuous feature.
        rank_by: 'auto', 'mse' or 'fvu' (see the module docstring).
        reference_conjunctions: Optional (R, n_literals) ternary rows (e.g. a planted tree's
            `node_conjunctions()` on the cube) that the LRH diagnostic measures instead of the distilled tree's
            own nodes.
        size_tolerance: Keep the smallest tree whose DP agreement is within this fraction of the best.
        max_auto_depth: Deepest depth tried when max_depth is None.
        confidence: Level of the one-sided fidelity bound.
        random_state: Seed (int) or None, for sampling and splitting.

    Attributes:
        tree_: The distilled `Tree`.
        classes_: Teacher classes (0..K-1).
        n_features_in_: Input width.
        depth_: Depth searched (max_depth, or the one chosen when max_depth is None).
        literals_: The `Literals` (feature, threshold) a split can test.
        conjunctions_: (C, L) ternary rows of every probed conjunction (row 0 is the root).
        probe_mse_: (C,) validation MSE of each probe (the root's is 0).
        n_probes_: Number of probes fitted (C).
        n_exhaustive_: Number of conjunctions of <= depth_ literals, sum_i 2^i C(L, i).
        n_samples_: Samples used, by kind: probe_train and probe_val (unlabelled), dp (teacher-labelled),
            fidelity (fresh, teacher-labelled).
        train_agreement_: Agreement of the tree with the teacher on the DP samples.
        fidelity_, fidelity_lower_, n_fidelity_: Agreement on fresh samples and its lower confidence bound.
        timings_: Seconds spent sampling, representing, probing and in the DP.
        rank_by_: The ranking used ('mse' or 'fvu'; 'auto' resolved).
        frontier_sizes_: Frontier size per level 1..depth_-1; frontier_bound_: the counting bound (m+1) 2^l.
        lrh_diagnostic_: One dict per level 1..depth_ (see the module docstring): `conjunctions` measured,
            `probed` (how many were among the candidates), `fvu_median` / `fvu_max` of their probes,
            `best_candidate_fvu`, `outranked` (candidates ranked above the worst measured one), `source`
            ('reference' or 'tree').

    Example:
        >>> import numpy as np
        >>> from kdforge.trees import LRHTreeDistiller
        >>> from kdforge.trees.synthetic import CubeSampler
        >>> teacher = lambda X: X[:, 0] * X[:, 1]          # XOR of two bits, +1 -> class 1
        >>> phi = lambda X: np.c_[X, X[:, :1] * X[:, 1:2]]  # a representation containing the XOR
        >>> est = LRHTreeDistiller(teacher, representation=phi, sampler=CubeSampler(6), max_depth=2,
        ...                        n_fidelity=2000, random_state=0).fit(np.zeros((1, 6)))
        >>> est.fidelity_, est.tree_.n_leaves
        (1.0, 4)
    """

    def __init__(self, teacher: Any = None, *, layers: Sequence[str] | None = None,
                 representation: Callable | None = None, sampler: Callable | None = None,
                 max_depth: int | None = 3, max_leaf_nodes: int | None = None, top_k: int | None = 20,
                 probe_mse: float | None = None, ridge: float = 1e-2, n_probe: int = 2000, n_val: int = 2000,
                 n_dp: int = 2000, n_fidelity: int = 20000, literals: str = "auto", n_thresholds: int = 8,
                 rank_by: str = "auto", size_tolerance: float = 0.005, max_auto_depth: int = 6,
                 confidence: float = 0.95, random_state: int | None = None, probe_scale: str = "variance",
                 reference_conjunctions: np.ndarray | None = None) -> None:
        self.teacher = teacher
        self.layers = layers
        self.representation = representation
        self.sampler = sampler
        self.max_depth = max_depth
        self.max_leaf_nodes = max_leaf_nodes
        self.top_k = top_k
        self.probe_mse = probe_mse
        self.ridge = ridge
        self.n_probe = n_probe
        self.n_val = n_val
        self.n_dp = n_dp
        self.n_fidelity = n_fidelity
        self.literals = literals
        self.n_thresholds = n_thresholds
        self.rank_by = rank_by
        self.size_tolerance = size_tolerance
        self.max_auto_depth = max_auto_depth
        self.confidence = confidence
        self.random_state = random_state
        self.probe_scale = probe_scale
        self.reference_conjunctions = reference_conjunctions

    # ------------------------------------------------------------------ validation
    def _check_params(self) -> None:
        name = type(self).__name__
        self._check_teacher()
        if self.max_depth is not None:
            check_int(self.max_depth, "max_depth", name, 1)
        check_int(self.max_auto_depth, "max_auto_depth", name, 1)
        if self.max_leaf_nodes is not None:
            check_int(self.max_leaf_nodes, "max_leaf_nodes", name, 1)
        if (self.top_k is None) == (self.probe_mse is None):
            raise ValueError(
                f"{name}: set exactly one of 'top_k' (practical variant) and 'probe_mse' (provable variant; then "
                f"pass top_k=None). Got top_k={self.top_k!r}, probe_mse={self.probe_mse!r}."
            )
        if self.top_k is not None:
            check_int(self.top_k, "top_k", name, 1)
        elif not (isinstance(self.probe_mse, (int, float)) and self.probe_mse >= 0):
            raise ValueError(f"The 'probe_mse' parameter of {name} must be a float >= 0. Got {self.probe_mse!r}.")
        if not (isinstance(self.ridge, (int, float)) and self.ridge > 0):
            raise ValueError(f"The 'ridge' parameter of {name} must be > 0. Got {self.ridge!r} instead.")
        for key in ("n_probe", "n_val", "n_dp"):
            check_int(getattr(self, key), key, name, 1)
        check_int(self.n_fidelity, "n_fidelity", name, 0)
        check_int(self.n_thresholds, "n_thresholds", name, 1)
        check_fraction(self.size_tolerance, "size_tolerance", name)
        if not 0 < self.confidence < 1:
            raise ValueError(f"The 'confidence' parameter of {name} must be in (0, 1). Got {self.confidence!r}.")
        if self.rank_by not in ("auto", "mse", "fvu"):
            raise ValueError(
                f"The 'rank_by' parameter of {name} must be 'auto', 'mse' or 'fvu'. Got {self.rank_by!r}."
            )
        if self.probe_scale not in ("variance", "raw"):
            raise ValueError(f"The 'probe_scale' parameter of {name} must be 'variance' or 'raw'. "
                             f"Got {self.probe_scale!r}.")
        if self.literals not in ("auto", "boolean", "quantile", "sensitivity"):
            raise ValueError(f"The 'literals' parameter of {name} must be 'auto', 'boolean', 'quantile' or "
                             f"'sensitivity'. Got {self.literals!r} instead.")
        if self.sampler is not None and not callable(self.sampler):
            raise ValueError(f"The 'sampler' parameter of {name} must be a callable (n, rng) -> array.")

    def _samples(self, X: np.ndarray | None, rng: np.random.Generator) -> list[np.ndarray]:
        """[probe_train, probe_val, dp, fidelity] from the sampler, or split from the pool X."""
        sizes = [self.n_probe, self.n_val, self.n_dp, self.n_fidelity]
        if self.sampler is not None:
            return [self._draw(n, rng, X) if n else np.zeros((0, X.shape[1] if X is not None else 0)) for n in sizes]
        n = len(X)
        if n < 4:
            raise ValueError(f"{type(self).__name__}: the pool X has {n} sample(s); it is split into probe-train, "
                             "probe-validation and DP parts, so give at least 4 (or a sampler).")
        order = rng.permutation(n)
        if n < sum(sizes):  # small pool: up to a fifth for fidelity, the rest in proportion
            n_fid = min(self.n_fidelity, n // 5)
            rest = n - n_fid
            weights = np.array(sizes[:3], dtype=float) / sum(sizes[:3])
            parts = np.maximum(1, np.floor(weights * rest).astype(int))
            parts[2] = rest - parts[0] - parts[1]
            sizes = [*parts.tolist(), n_fid]
        bounds = np.cumsum([0, *sizes])
        return [X[order[bounds[i]:bounds[i + 1]]] for i in range(4)]

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any = None, y: Any = None) -> LRHTreeDistiller:
        """Distil the teacher. X: pool of unlabelled inputs (or only its width, with a sampler); y is ignored."""
        self._check_params()
        if X is None and self.sampler is None:
            raise ValueError(f"{type(self).__name__}.fit: give a pool X of unlabelled inputs, or a sampler.")
        X = self._validate_input(X, reset=True) if X is not None else None
        self._reset_classes()
        # layer names and the representation are checked before any sampling or teacher call
        represent = make_representation(self.teacher, self.layers, self.representation, type(self).__name__)
        rng = np.random.default_rng(check_random_state(self.random_state).randint(2**31))
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        X_probe, X_val, X_dp, X_fid = self._samples(X, rng)
        if X is None:
            self.n_features_in_ = X_probe.shape[1]
        y_dp = self._teacher_labels(X_dp)
        y_fid = self._teacher_labels(X_fid) if len(X_fid) else None
        fitting = np.concatenate([X_probe, X_val, X_dp])
        predict = (lambda A: self._teacher_labels(A)) if self.literals == "sensitivity" else None
        self.literals_ = choose_literals(fitting, self.literals, self.n_thresholds, predict, rng)
        Z_probe, Z_val, Z_dp = (self.literals_.transform(A) for A in (X_probe, X_val, X_dp))
        timings["sample_and_label"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        phi_probe = represent(X_probe.astype(np.float32))
        phi_val = represent(X_val.astype(np.float32))
        probes = RidgeProbes(self.ridge).fit(phi_probe)
        phi_val_std = probes.standardize(phi_val)
        timings["represent"] = time.perf_counter() - t0

        rank_by = self.rank_by
        if rank_by == "auto":
            rank_by = "mse" if is_balanced_cube(fitting) else "fvu"
        self.rank_by_ = rank_by
        n_literals = len(self.literals_)
        reference = self._check_reference(n_literals)
        levels = [np.zeros((1, n_literals), dtype=np.int8)]
        errors = [np.zeros(1)]
        scores: list[np.ndarray] = [np.zeros(1)]
        frontier = levels[0]
        frontier_sizes: list[int] = []
        bounds: list[int] = []
        depth_cap = self.max_depth if self.max_depth is not None else self.max_auto_depth
        depth_cap = min(depth_cap, n_literals)
        probe_seconds = dp_seconds = 0.0
        best = None  # (agreement, depth, dp result)
        for depth in range(1, depth_cap + 1):
            t0 = time.perf_counter()
            candidates = extend(frontier)
            mse, var = self._probe(candidates, probes, Z_probe, Z_val, phi_val_std)
            usable = np.isfinite(var)
            score = np.where(usable, mse / np.where(usable, var, 1.0) if rank_by == "fvu" else mse, np.inf)
            levels.append(candidates)
            errors.append(mse)
            scores.append(score)
            if self.top_k is not None:
                order = np.nonzero(usable)[0][np.argsort(score[usable], kind="stable")]
                frontier = candidates[order[: self.top_k]]
            else:
                frontier = self._threshold_frontier(candidates, mse, var, usable, depth, phi_probe.shape[1], bounds)
            frontier_sizes.append(len(frontier))
            probe_seconds += time.perf_counter() - t0
            if self.max_depth is not None and depth < self.max_depth:
                continue
            t0 = time.perf_counter()
            leaves = self.max_leaf_nodes or 2**depth
            result = tree_dp(np.concatenate(levels), Z_dp, y_dp, len(self.classes_), leaves)
            agreement = result.best_correct(leaves) / len(y_dp)
            dp_seconds += time.perf_counter() - t0
            if best is not None and agreement < best[0] + 1e-3:
                break  # auto depth: one more level did not help
            best = (agreement, depth, result)
            if agreement >= 1.0 or len(frontier) == 0:
                break
        assert best is not None
        agreement, self.depth_, result = best
        self.conjunctions_ = result.rows
        self.probe_mse_ = np.concatenate(errors)[: len(result.rows)]
        self.n_probes_ = int(len(result.rows))
        self.n_exhaustive_ = int(sum(2**i * math.comb(n_literals, i) for i in range(self.depth_ + 1)))
        self.frontier_sizes_ = frontier_sizes[: max(self.depth_ - 1, 0)]
        self.frontier_bound_ = [(phi_probe.shape[1] + 1) * 2**level for level in range(1, self.depth_)]
        t0 = time.perf_counter()
        budget = result.smallest_budget(self.size_tolerance)
        self.tree_ = result.build(budget, self.literals_)
        measured = reference if reference is not None else tree_conjunctions(self.tree_, self.literals_)
        self.lrh_diagnostic_ = self._diagnose(measured, "reference" if reference is not None else "tree",
                                              levels, scores, probes, Z_probe, Z_val, phi_val_std)
        self.train_agreement_ = float(np.mean(self.tree_.predict_proba(X_dp).argmax(axis=1) == y_dp))
        dp_seconds += time.perf_counter() - t0
        self.n_samples_ = {"probe_train": len(X_probe), "probe_val": len(X_val), "dp": len(X_dp),
                           "fidelity": len(X_fid)}
        timings.update(probe=probe_seconds, dp=dp_seconds)
        self.timings_ = timings
        self._finish_fit(X_fid if len(X_fid) else None, y_fid)
        return self

    def save(self, folder: str | Path, feature_names: list[str] | None = None, title: str | None = None,
             class_names: list[str] | None = None) -> None:
        """As the base `save`, plus lrh_diagnostic.md (the per-level LRH diagnostic)."""
        super().save(folder, feature_names, title, class_names)
        write_text(Path(folder) / "lrh_diagnostic.md", "\n".join(render.lrh_diagnostic_lines(self.lrh_diagnostic_))
                   + "\n")

    def _check_reference(self, n_literals: int) -> np.ndarray | None:
        if self.reference_conjunctions is None:
            return None
        ref = np.asarray(self.reference_conjunctions)
        if ref.ndim != 2 or ref.shape[1] != n_literals or not np.isin(ref, (-1, 0, 1)).all():
            raise ValueError(f"{type(self).__name__}: 'reference_conjunctions' must be (R, {n_literals}) ternary rows "
                             f"(-1/0/+1 per literal); got shape {ref.shape}.")
        return ref.astype(np.int8)

    def _threshold_frontier(self, candidates: np.ndarray, mse: np.ndarray, var: np.ndarray, usable: np.ndarray,
                            level: int, width: int, bounds: list[int]) -> np.ndarray:
        """Provable variant: every usable candidate under the threshold, cut to the counting bound (m+1) 2^l."""
        error = mse / np.where(usable, var, 1.0) if self.probe_scale == "variance" else mse
        keep = np.nonzero(usable & (error <= self.probe_mse))[0]
        bound = (width + 1) * 2**level
        bounds.append(bound)
        if len(keep) > bound:
            warnings.warn(f"{type(self).__name__}: {len(keep)} level-{level} conjunctions pass probe_mse="
                          f"{self.probe_mse} but at most (m+1)*2^l = {bound} can be represented exactly "
                          f"(m = {width}); the threshold admits unrepresented conjunctions, keeping the best "
                          f"{bound}. Lower probe_mse.", UserWarning, stacklevel=3)
            keep = keep[np.argsort(error[keep], kind="stable")[:bound]]
        return candidates[keep]

    def _probe(self, candidates: np.ndarray, probes: RidgeProbes, Z_probe: np.ndarray, Z_val: np.ndarray,
               phi_val_std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(validation MSE, validation variance of the target) of each candidate; the variance is inf for a
        conjunction that is constant on the validation split or never satisfied on probe-train (unusable)."""
        mse = np.empty(len(candidates))
        variance = np.empty(len(candidates))
        for start in range(0, len(candidates), _CHUNK):
            rows = candidates[start:start + _CHUNK]
            y_train, y_val = and_values(Z_probe, rows), and_values(Z_val, rows)
            err = probes.validation_mse(phi_val_std, y_train, y_val)
            var = y_val.var(axis=0).astype(np.float64)
            constant = (var < 1e-12) | (y_train.max(axis=0) < 0)  # never satisfied: nothing to represent
            mse[start:start + len(rows)] = err
            variance[start:start + len(rows)] = np.where(constant, np.inf, var)
        return mse, variance

    def _diagnose(self, measured: np.ndarray, source: str, levels: list[np.ndarray], scores: list[np.ndarray],
                  probes: RidgeProbes, Z_probe: np.ndarray, Z_val: np.ndarray,
                  phi_val_std: np.ndarray) -> list[dict[str, Any]]:
        """Per level: how well the probes explain the measured conjunctions (FVU) and how they rank."""
        out = []
        nnz = np.abs(measured).sum(axis=1)
        for level in range(1, self.depth_ + 1):
            rows = measured[nnz == level]
            if len(rows) == 0:
                continue
            mse, var = self._probe(rows, probes, Z_probe, Z_val, phi_val_std)
            fvu = np.where(np.isfinite(var), mse / np.where(np.isfinite(var), var, 1.0), np.nan)
            position = {r.tobytes(): i for i, r in enumerate(levels[level])} if level < len(levels) else {}
            found = [position[r.tobytes()] for r in rows if r.tobytes() in position]
            level_scores = scores[level] if level < len(scores) else np.zeros(0)
            worst = max((level_scores[i] for i in found), default=np.nan)
            finite = level_scores[np.isfinite(level_scores)]
            best = None
            if len(finite):
                best_index = int(np.argmin(np.where(np.isfinite(level_scores), level_scores, np.inf)))
                cand_mse, cand_var = self._probe(levels[level][best_index:best_index + 1], probes, Z_probe, Z_val,
                                                 phi_val_std)
                best = float(cand_mse[0] / cand_var[0])
            ok = fvu[np.isfinite(fvu)]
            out.append({"level": level, "source": source, "conjunctions": int(len(rows)), "probed": len(found),
                        "fvu_median": float(np.median(ok)) if len(ok) else None,
                        "fvu_max": float(np.max(ok)) if len(ok) else None, "best_candidate_fvu": best,
                        "outranked": int(np.sum(finite < worst)) if np.isfinite(worst) else None})
        return out


def tree_conjunctions(tree: Tree, literals: Literals) -> np.ndarray:
    """(nodes, L) ternary rows: the path conjunction of every node of `tree` (root first), over `literals`."""
    index = {(int(f), float(t)): i for i, (f, t) in enumerate(zip(literals.feature, literals.threshold, strict=True))}
    rows = [np.zeros(len(literals), dtype=np.int8)]
    stack = [(0, 0)]
    while stack:
        node, row = stack.pop()
        if tree.feature[node] < 0:
            continue
        literal = index[(int(tree.feature[node]), float(tree.threshold[node]))]
        for child, sign in ((tree.left[node], -1), (tree.right[node], 1)):
            new = rows[row].copy()
            new[literal] = sign
            rows.append(new)
            stack.append((child, len(rows) - 1))
    return np.asarray(rows)
