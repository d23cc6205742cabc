"""What every tree distiller shares: teacher labels, sampling, prediction, rendering and the fidelity bound.

Each distiller is a scikit-learn classifier whose `fit(X, y=None)` ignores `y`: labels come from the teacher.
`X` is a pool of unlabelled inputs (the distribution to mimic the teacher on); a `sampler(n, rng)` callable,
when given, draws fresh inputs instead and `X` only fixes the number of features.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from kdforge.errors import ShapeMismatchError
from kdforge.io import write_json, write_text
from kdforge.metrics.fidelity import clopper_pearson_lower
from kdforge.trees import render
from kdforge.trees.teachers import labels_from_scores, n_teacher_classes, teacher_scores
from kdforge.trees.tree import Tree


def check_int(value: Any, name: str, owner: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"The {name!r} parameter of {owner} must be an int >= {minimum}. Got {value!r} instead.")
    return int(value)


def check_fraction(value: Any, name: str, owner: str) -> float:
    if not isinstance(value, (int, float, np.floating)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ValueError(f"The {name!r} parameter of {owner} must be a float in [0, 1). Got {value!r} instead.")
    return float(value)


FRESH_DRAWS = "fresh sampler draws, never used in fitting"  # what a fidelity bound was measured on (fidelity_rows_)
HELD_OUT_ROWS = "held-out rows of the pool X, never used in fitting"


class TeacherTreeMixin(ClassifierMixin):
    """Shared machinery; subclasses set `tree_` (a `Tree`) in `fit` and call `_finish_fit`."""

    def _validate_input(self, X: Any, reset: bool) -> np.ndarray | None:
        if X is None:
            return None
        return validate_data(self, X, reset=reset, dtype=np.float64)

    def _check_teacher(self) -> None:
        if self.teacher is None:
            raise ValueError(f"{type(self).__name__}: 'teacher' is required (an nn.Module or a callable X -> scores).")

    def _teacher_labels(self, X: np.ndarray) -> np.ndarray:
        """Teacher class ids on X; the first call fixes `classes_` (0..K-1)."""
        scores = teacher_scores(self.teacher, np.asarray(X, dtype=np.float32), f"{type(self).__name__}.teacher")
        n_classes = n_teacher_classes(scores)
        if not hasattr(self, "classes_"):
            self.classes_ = np.arange(n_classes)
        elif len(self.classes_) != n_classes:
            raise ShapeMismatchError(
                f"{type(self).__name__}.teacher: returned {n_classes} classes on one call and {len(self.classes_)} "
                "on another; a teacher must have a fixed output width."
            )
        return labels_from_scores(scores)

    def _reset_classes(self) -> None:
        if hasattr(self, "classes_"):
            del self.classes_

    def _draw(self, n: int, rng: np.random.Generator, X: np.ndarray | None) -> np.ndarray:
        """n fresh inputs from `sampler`, checked for shape."""
        out = np.asarray(self.sampler(n, rng), dtype=np.float64)
        if out.ndim != 2 or out.shape[0] != n:
            raise ShapeMismatchError(
                f"{type(self).__name__}.sampler: asked for {n} inputs, got shape {tuple(out.shape)}; "
                f"a sampler returns an (n, n_features) array."
            )
        if X is not None and out.shape[1] != X.shape[1]:
            raise ShapeMismatchError(
                f"{type(self).__name__}.sampler: draws {out.shape[1]} features but X has {X.shape[1]}."
            )
        return out

    def _fit_inputs(self, X: Any, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        """(inputs to fit on, held-out inputs for fidelity): `n_samples` and `n_fidelity` fresh draws from the
        sampler, or a split of the pool X (at most a fifth of it held out) when there is no sampler."""
        name = type(self).__name__
        if X is None and self.sampler is None:
            raise ValueError(f"{name}.fit: give a pool X of unlabelled inputs, or a sampler.")
        X = self._validate_input(X, reset=True) if X is not None else None
        self._reset_classes()
        self.fidelity_rows_ = FRESH_DRAWS if self.sampler is not None else HELD_OUT_ROWS
        if self.sampler is not None:
            X_fit = self._draw(self.n_samples, rng, X)
            X_fid = self._draw(self.n_fidelity, rng, X) if self.n_fidelity else None
            if X is None:
                self.n_features_in_ = X_fit.shape[1]
            return X_fit, X_fid
        order = rng.permutation(len(X))
        n_fid = min(self.n_fidelity, len(X) // 5)
        return (X[order[n_fid:]], X[order[:n_fid]]) if n_fid else (X, None)

    def _finish_fit(self, X_fidelity: np.ndarray | None, y_fidelity: np.ndarray | None) -> None:
        """Fidelity on fresh, never-fitted samples, with a one-sided Clopper-Pearson lower bound."""
        if X_fidelity is None or len(X_fidelity) == 0:
            self.fidelity_, self.fidelity_lower_, self.n_fidelity_ = float("nan"), float("nan"), 0
            return
        agree = int((self.tree_.predict_proba(X_fidelity).argmax(axis=1) == y_fidelity).sum())
        self.n_fidelity_ = int(len(X_fidelity))
        self.fidelity_ = agree / self.n_fidelity_
        self.fidelity_lower_ = clopper_pearson_lower(agree, self.n_fidelity_, self.confidence)

    # ------------------------------------------------------------------ prediction
    def predict_proba(self, X: Any) -> np.ndarray:
        """(N, K) class distribution (teacher labels) of the leaf each row reaches."""
        check_is_fitted(self, "tree_")
        X = self._validate_input(X, reset=False)
        return self.tree_.predict_proba(X)

    def predict(self, X: Any) -> np.ndarray:
        proba = self.predict_proba(X)  # first: it raises NotFittedError before classes_ is touched
        return self.classes_[np.argmax(proba, axis=1)]

    def apply(self, X: Any) -> np.ndarray:
        """Index of the leaf each row reaches."""
        check_is_fitted(self, "tree_")
        return self.tree_.apply(self._validate_input(X, reset=False))

    def fidelity(self, X: Any) -> float:
        """Agreement with the teacher on the rows of X."""
        pred = self.predict(X)  # checks fitted and validates X
        X = self._validate_input(X, reset=False)
        return float(np.mean(pred == self.classes_[self._teacher_labels(X)]))

    # ------------------------------------------------------------------ output a user reads
    def fidelity_statement(self) -> str:
        """'agrees with the teacher on >= X% of inputs with 95% confidence, from N fresh samples'."""
        check_is_fitted(self, "tree_")
        if self.n_fidelity_ == 0:
            return "fidelity not measured (n_fidelity=0)"
        agree = int(round(self.fidelity_ * self.n_fidelity_))
        return render.fidelity_statement(agree, self.n_fidelity_, self.fidelity_lower_, self.confidence,
                                         samples=getattr(self, "fidelity_rows_", "fresh samples"))

    def _names(self, feature_names: list[str] | None) -> list[str] | None:
        """Given names, else the column names of a DataFrame X seen in fit, else None (x[j])."""
        if feature_names is not None:
            return list(feature_names)
        names = getattr(self, "feature_names_in_", None)
        return [str(n) for n in names] if names is not None else None

    def _class_labels(self, class_names: list[str] | None) -> np.ndarray:
        """What a leaf prints: class_names[c] (e.g. a dataset's target_names), else the class id c."""
        if class_names is None:
            return self.classes_
        names = [str(c) for c in class_names]
        if len(names) != len(self.classes_):
            raise ValueError(f"{type(self).__name__}: {len(names)} class_names for {len(self.classes_)} teacher "
                             f"classes; give one name per class id 0..{len(self.classes_) - 1}.")
        return np.asarray(names, dtype=object)

    def export_text(self, feature_names: list[str] | None = None, class_names: list[str] | None = None) -> str:
        check_is_fitted(self, "tree_")
        return render.export_text(self.tree_, self._class_labels(class_names), self._names(feature_names))

    def export_rules(self, feature_names: list[str] | None = None,
                     class_names: list[str] | None = None) -> list[str]:
        check_is_fitted(self, "tree_")
        return render.export_rules(self.tree_, self._class_labels(class_names), self._names(feature_names))

    def to_dict(self, feature_names: list[str] | None = None,
                class_names: list[str] | None = None) -> dict[str, Any]:
        check_is_fitted(self, "tree_")
        out = render.to_dict(self.tree_, self._class_labels(class_names), self._names(feature_names))
        out["fidelity"] = {"observed": self.fidelity_, "lower_bound": self.fidelity_lower_,
                           "confidence": self.confidence, "n_fresh_samples": self.n_fidelity_}
        if hasattr(self, "fidelity_rows_"):  # which rows: fresh sampler draws, or rows held out of the pool
            out["fidelity"]["measured_on"] = self.fidelity_rows_
        return out

    def save(self, folder: str | Path, feature_names: list[str] | None = None, title: str | None = None,
             class_names: list[str] | None = None) -> None:
        """tree.txt (rules), tree.json, tree.png and fidelity.txt in `folder` (each written atomically)."""
        folder = Path(folder)
        write_text(folder / "tree.txt", self.export_text(feature_names, class_names) + "\n" +
                   "\n".join(self.export_rules(feature_names, class_names)) + "\n")
        write_json(folder / "tree.json", self.to_dict(feature_names, class_names))
        render.save_png(self.tree_, self._class_labels(class_names), folder / "tree.png", self._names(feature_names),
                        title)
        write_text(folder / "fidelity.txt", self.fidelity_statement() + "\n")

    @property
    def n_leaves_(self) -> int:
        check_is_fitted(self, "tree_")
        return self.tree_.n_leaves


class TeacherTreeEstimator(TeacherTreeMixin, BaseEstimator):
    """Base for the distillers; adds nothing but the scikit-learn tags."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.poor_score = True  # it follows the teacher, not y
        tags.target_tags.required = False
        return tags


__all__ = ["TeacherTreeEstimator", "Tree", "check_fraction", "check_int"]
