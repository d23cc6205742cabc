"""Soft decision tree (Frosst & Hinton, "Distilling a Neural Network Into a Soft Decision Tree", 2017),
trained on the teacher's soft targets.

https://arxiv.org/abs/1711.09784

A full binary tree of depth D. Inner node i routes right with p_i(x) = sigmoid(beta * (w_i . x + b_i)) (one
learned inverse temperature beta); leaf l holds logits phi_l, Q_l = softmax(phi_l); P_l(x) is the product of
routing probabilities on its path. Loss (PAC_DISTILLATION.md 5.2), with T the teacher's class distribution:

    L = -sum_l P_l(x) sum_k T_k log Q_lk  +  lambda * sum_i 2^-depth(i) * -(1/2)[log a_i + log(1 - a_i)]

where a_i = sum_x P_i(x) p_i(x) / sum_x P_i(x) is node i's average right-routing share. The paper uses running
averages of a_i for deep nodes; this implementation uses the current mini-batch (a simplification).
Inference follows the single most probable path (the readable variant): the prediction is Q of that leaf.
Inputs are standardised with the fitting samples' statistics. Splits are oblique, so this estimator has no
axis-aligned `tree_`; `export_text` lists each inner node's largest weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted
from torch import nn

from kdforge.io import write_json, write_text
from kdforge.metrics.fidelity import clopper_pearson_lower
from kdforge.trees.base import TeacherTreeEstimator, check_int
from kdforge.trees.teachers import teacher_scores


class SoftTreeModule(nn.Module):
    """The soft tree itself: routing layer (2^D - 1 inner nodes), leaf logits (2^D, K), inverse temperature."""

    def __init__(self, n_features: int, depth: int, n_classes: int) -> None:
        super().__init__()
        self.depth = depth
        self.inner = nn.Linear(n_features, 2**depth - 1)
        self.leaves = nn.Parameter(torch.zeros(2**depth, n_classes))
        self.log_beta = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(path probabilities (B, 2^D), right-routing probabilities (B, 2^D - 1), node reach (B, 2^D - 1))."""
        right = torch.sigmoid(self.log_beta.exp() * self.inner(x))  # (B, 2^D - 1)
        reach = torch.ones(x.shape[0], 1, device=x.device)
        reaches = []
        for level in range(self.depth):
            start = 2**level - 1
            p = right[:, start:start + 2**level]  # (B, 2^level)
            reaches.append(reach)
            reach = torch.stack([reach * (1 - p), reach * p], dim=2).flatten(1)  # left, right children in order
        return reach, right, torch.cat(reaches, dim=1)


class SoftDecisionTree(TeacherTreeEstimator):
    """Frosst & Hinton soft decision tree distilled from the teacher's soft outputs.

    Args:
        teacher: An `nn.Module` or a callable X -> scores (logits; softmax, or sigmoid for one logit, gives T).
        sampler: Callable (n, rng) -> inputs; without it the pool X (less a fidelity hold-out) is used.
        depth: Tree depth D >= 1 (2^D leaves).
        n_samples: Inputs drawn from the sampler for fitting.
        epochs, batch_size, lr: Adam training of the tree.
        penalty: lambda of the balance regulariser (1e-3 in `xuyxu/Soft-Decision-Tree`).
        n_fidelity: Fresh inputs for the fidelity estimate.
        confidence: Level of the one-sided fidelity bound.
        random_state: Seed (also seeds torch's initialisation).

    Attributes:
        module_: The trained `SoftTreeModule`. classes_, n_features_in_, fidelity_, fidelity_lower_,
        n_fidelity_, n_samples_: as in `LRHTreeDistiller`.
    """

    def __init__(self, teacher: Any = None, *, sampler: Callable | None = None, depth: int = 4,
                 n_samples: int = 6000, epochs: int = 40, batch_size: int = 256, lr: float = 1e-2,
                 penalty: float = 1e-3, n_fidelity: int = 20000, confidence: float = 0.95,
                 random_state: int | None = None) -> None:
        self.teacher = teacher
        self.sampler = sampler
        self.depth = depth
        self.n_samples = n_samples
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.penalty = penalty
        self.n_fidelity = n_fidelity
        self.confidence = confidence
        self.random_state = random_state

    def _soft_targets(self, X: np.ndarray) -> np.ndarray:
        scores = teacher_scores(self.teacher, X.astype(np.float32), f"{type(self).__name__}.teacher")
        if scores.shape[1] == 1:
            p = 1.0 / (1.0 + np.exp(-scores[:, 0]))
            return np.stack([1 - p, p], axis=1)
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def fit(self, X: Any = None, y: Any = None) -> SoftDecisionTree:
        """Train the soft tree on teacher soft targets; y is ignored."""
        name = type(self).__name__
        self._check_teacher()
        check_int(self.depth, "depth", name, 1)
        for key in ("n_samples", "epochs", "batch_size"):
            check_int(getattr(self, key), key, name, 1)
        check_int(self.n_fidelity, "n_fidelity", name, 0)
        if not self.lr > 0:
            raise ValueError(f"The 'lr' parameter of {name} must be > 0. Got {self.lr!r} instead.")
        random = check_random_state(self.random_state)
        rng = np.random.default_rng(random.randint(2**31))
        X_fit, X_fid = self._fit_inputs(X, rng)
        self._teacher_labels(X_fit[:1])  # fixes classes_
        targets = torch.as_tensor(self._soft_targets(X_fit), dtype=torch.float32)
        self.mean_, std = X_fit.mean(axis=0), X_fit.std(axis=0)
        self.scale_ = np.where(std > 1e-12, std, 1.0)
        xt = torch.as_tensor((X_fit - self.mean_) / self.scale_, dtype=torch.float32)
        gen = torch.Generator().manual_seed(int(random.randint(2**31)))
        with torch.random.fork_rng():
            torch.manual_seed(int(random.randint(2**31)))
            module = SoftTreeModule(X_fit.shape[1], self.depth, len(self.classes_))
        opt = torch.optim.Adam(module.parameters(), lr=self.lr)
        node_depth = torch.cat([torch.full((2**level,), float(level)) for level in range(self.depth)])
        decay = 2.0 ** (-node_depth)
        for _ in range(self.epochs):
            for idx in torch.randperm(len(xt), generator=gen).split(self.batch_size):
                path, right, reach = module(xt[idx])
                log_q = torch.log_softmax(module.leaves, dim=1)  # (L, K)
                ce = -(path * (targets[idx] @ log_q.T)).sum(dim=1).mean()
                share = (reach * right).sum(0) / reach.sum(0).clamp_min(1e-8)
                share = share.clamp(1e-6, 1 - 1e-6)
                reg = -(decay * 0.5 * (share.log() + (1 - share).log())).sum()
                loss = ce + self.penalty * reg
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.module_ = module.eval()
        self.n_samples_ = {"labelled": len(X_fit), "fidelity": 0 if X_fid is None else len(X_fid)}
        if X_fid is None:
            self.fidelity_, self.fidelity_lower_, self.n_fidelity_ = float("nan"), float("nan"), 0
        else:
            agree = int((self._proba(X_fid).argmax(axis=1) == self._teacher_labels(X_fid)).sum())
            self.n_fidelity_ = len(X_fid)
            self.fidelity_ = agree / self.n_fidelity_
            self.fidelity_lower_ = clopper_pearson_lower(agree, self.n_fidelity_, self.confidence)
        return self

    def _proba(self, X: np.ndarray) -> np.ndarray:
        xt = torch.as_tensor((X - self.mean_) / self.scale_, dtype=torch.float32)
        with torch.no_grad():
            path, _, _ = self.module_(xt)
            q = torch.softmax(self.module_.leaves, dim=1)
        return q[path.argmax(dim=1)].numpy().astype(np.float64)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Q of the leaf on the most probable path."""
        check_is_fitted(self, "module_")
        return self._proba(self._validate_input(X, reset=False))

    def export_text(self, feature_names: list[str] | None = None, n_weights: int = 3) -> str:
        """Each inner node's routing rule (largest |weights|, in the original feature units) and leaf classes."""
        check_is_fitted(self, "module_")
        w = self.module_.inner.weight.detach().numpy() / self.scale_  # undo standardisation
        b = self.module_.inner.bias.detach().numpy() - w @ self.mean_
        names = feature_names or [f"x[{j}]" for j in range(w.shape[1])]
        lines = []
        for i in range(w.shape[0]):
            top = np.argsort(-np.abs(w[i]))[:n_weights]
            terms = " ".join(f"{w[i, j]:+.3g}*{names[j]}" for j in top)
            lines.append(f"node {i} (depth {int(np.log2(i + 1))}): go right if {terms} {b[i]:+.3g} ... > 0")
        q = torch.softmax(self.module_.leaves, dim=1).detach().numpy()
        for leaf in range(q.shape[0]):
            lines.append(f"leaf {leaf}: class {self.classes_[q[leaf].argmax()]} (p={q[leaf].max():.3f})")
        return "\n".join(lines) + "\n"

    def export_rules(self, feature_names: list[str] | None = None) -> list[str]:
        return self.export_text(feature_names).splitlines()

    def to_dict(self, feature_names: list[str] | None = None) -> dict[str, Any]:
        check_is_fitted(self, "module_")
        return {"depth": self.depth, "inner_weight": self.module_.inner.weight.detach().tolist(),
                "inner_bias": self.module_.inner.bias.detach().tolist(),
                "leaf_logits": self.module_.leaves.detach().tolist(), "input_mean": self.mean_.tolist(),
                "input_scale": self.scale_.tolist(),
                "fidelity": {"observed": self.fidelity_, "lower_bound": self.fidelity_lower_,
                             "confidence": self.confidence, "n_fresh_samples": self.n_fidelity_,
                             "measured_on": self.fidelity_rows_}}

    def fidelity_statement(self) -> str:
        check_is_fitted(self, "module_")
        from kdforge.trees import render

        if self.n_fidelity_ == 0:
            return "fidelity not measured (n_fidelity=0)"
        agree = int(round(self.fidelity_ * self.n_fidelity_))
        return render.fidelity_statement(agree, self.n_fidelity_, self.fidelity_lower_, self.confidence,
                                         samples=self.fidelity_rows_)

    def save(self, folder, feature_names: list[str] | None = None, title: str | None = None) -> None:
        """tree.txt, tree.json and fidelity.txt (no PNG: the splits are oblique)."""
        from pathlib import Path

        folder = Path(folder)
        write_text(folder / "tree.txt", self.export_text(feature_names))
        write_json(folder / "tree.json", self.to_dict(feature_names))
        write_text(folder / "fidelity.txt", self.fidelity_statement() + "\n")

    def apply(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "module_")
        xt = torch.as_tensor((self._validate_input(X, reset=False) - self.mean_) / self.scale_, dtype=torch.float32)
        with torch.no_grad():
            return self.module_(xt)[0].argmax(dim=1).numpy()

    @property
    def n_leaves_(self) -> int:
        return 2**self.depth
