"""Teachers for the tree distillers: labels and activations from an `nn.Module` or a plain callable.

A teacher maps an (N, D) float array to scores: (N,) or (N, 1) for one logit (class 1 when > 0), or (N, K)
with K >= 2 (class = argmax). An `nn.Module`'s activations are read with the project's `Capture` (forward
hooks by dotted module path), so "the layers whose activations form the representation" are module names.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from kdforge.capture import Capture, resolve_module
from kdforge.errors import KDForgeError, ShapeMismatchError

_BATCH = 4096


def _as_tensor(X: np.ndarray, model: nn.Module) -> torch.Tensor:
    param = next(iter(model.parameters()), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    return torch.as_tensor(np.ascontiguousarray(X), dtype=dtype, device=device)


def _to_numpy(out: Any, where: str) -> np.ndarray:
    if isinstance(out, torch.Tensor):
        return out.detach().float().cpu().numpy()
    try:
        return np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise KDForgeError(f"{where}: expected an array of scores; got {type(out).__name__}.") from exc


def teacher_scores(teacher: Any, X: np.ndarray, where: str = "teacher") -> np.ndarray:
    """The teacher's raw outputs on X as a 2-D float array (N, K), K = 1 for a single logit."""
    if isinstance(teacher, nn.Module):
        was_training = teacher.training
        teacher.eval()
        chunks = []
        with torch.no_grad():
            for start in range(0, len(X), _BATCH):
                chunks.append(_to_numpy(teacher(_as_tensor(X[start:start + _BATCH], teacher)), where))
        teacher.train(was_training)
        out = np.concatenate(chunks) if chunks else np.zeros((0, 1))
    elif callable(teacher):
        out = _to_numpy(teacher(X), where)
    else:
        raise KDForgeError(
            f"{where}: must be a torch.nn.Module or a callable X -> scores; got {type(teacher).__name__}."
        )
    if out.ndim == 1:
        out = out[:, None]
    if out.ndim != 2 or out.shape[0] != len(X):
        raise ShapeMismatchError(
            f"{where}: on {len(X)} inputs the teacher returned shape {tuple(out.shape)}; expected ({len(X)},), "
            f"({len(X)}, 1) (one logit) or ({len(X)}, K) (K class scores). Wrap the model so it returns logits."
        )
    if not np.all(np.isfinite(out)):
        raise KDForgeError(f"{where}: the teacher returned non-finite scores (NaN or inf) on some inputs.")
    return out


def labels_from_scores(scores: np.ndarray) -> np.ndarray:
    """Class ids: one column -> 1 where the logit is > 0; K columns -> argmax."""
    if scores.shape[1] == 1:
        return (scores[:, 0] > 0).astype(np.int64)
    return scores.argmax(axis=1).astype(np.int64)


def n_teacher_classes(scores: np.ndarray) -> int:
    return 2 if scores.shape[1] == 1 else scores.shape[1]


def default_layers(model: nn.Module) -> list[str]:
    """Every leaf submodule (no children) except dropout: pre- and post-activations of each layer, and the
    output layer, which is the representation the author's code probes (PAC_DISTILLATION.md 2.2)."""
    names = []
    for name, module in model.named_modules():
        if name and not list(module.children()) and not isinstance(module, nn.Dropout):
            names.append(name)
    return names


def check_layers(model: nn.Module, layers: Sequence[str], owner: str) -> None:
    """Every name is a submodule (UnknownNameError listing close names otherwise)."""
    for i, path in enumerate(layers):
        resolve_module(model, path, where=f"{owner}.layers[{i}]")


def module_activations(model: nn.Module, layers: Sequence[str], X: np.ndarray, owner: str) -> np.ndarray:
    """(N, m): the captured outputs of `layers`, each flattened per sample, concatenated in order."""
    capture = Capture(model, {f"t{i}": path for i, path in enumerate(layers)}, owner=owner)
    was_training = model.training
    model.eval()
    chunks = []
    try:
        with torch.no_grad():
            for start in range(0, len(X), _BATCH):
                with capture:
                    model(_as_tensor(X[start:start + _BATCH], model))
                capture.check_fired()
                feats = [capture.features[f"t{i}"].flatten(1).float().cpu().numpy() for i in range(len(layers))]
                chunks.append(np.concatenate(feats, axis=1))
    finally:
        capture.remove()
        model.train(was_training)
    return np.concatenate(chunks) if chunks else np.zeros((0, 0))


def make_representation(teacher: Any, layers: Sequence[str] | None, representation: Callable | None,
                        owner: str) -> Callable[[np.ndarray], np.ndarray]:
    """A function X -> (N, m) activations from `layers` of an nn.Module teacher, or a user callable."""
    if representation is not None:
        if layers is not None:
            raise ValueError(f"{owner}: give either 'layers' (module names of an nn.Module teacher) or "
                             "'representation' (a callable), not both.")
        if not callable(representation):
            raise ValueError(f"{owner}: 'representation' must be a callable X -> (N, m) activations.")

        def call(X: np.ndarray) -> np.ndarray:
            out = _to_numpy(representation(X), f"{owner}.representation")
            if out.ndim != 2 or out.shape[0] != len(X):
                raise ShapeMismatchError(
                    f"{owner}.representation: on {len(X)} inputs it returned shape {tuple(out.shape)}; "
                    f"expected ({len(X)}, m) activations, one row per input."
                )
            return out

        return call
    if not isinstance(teacher, nn.Module):
        raise ValueError(
            f"{owner}: the teacher is not an nn.Module, so its activations cannot be captured by layer name. "
            "Pass representation=callable returning (N, m) activations."
        )
    names = list(layers) if layers is not None else default_layers(teacher)
    if not names:
        raise ValueError(f"{owner}: 'layers' is empty; name at least one submodule whose output to probe.")
    check_layers(teacher, names, owner)
    return lambda X: module_activations(teacher, names, X, owner)


def train_classifier(model: nn.Module, X: np.ndarray, y: np.ndarray, *, lr: float = 1e-3, batch_size: int = 256,
                     max_epochs: int = 200, weight_decay: float = 0.0, seed: int = 0,
                     stop_at_train_accuracy: float = 1.0) -> dict[str, Any]:
    """Train `model` (X -> scores) with Adam on class ids y; stops once the training accuracy reaches
    `stop_at_train_accuracy` (checked after every epoch). One output column means one logit with
    BCE-with-logits (the paper's "class" loss); K columns mean cross-entropy. Returns {epochs, seconds,
    train_accuracy}; the model is left in eval mode."""
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    binary = teacher_scores(model, X[:2]).shape[1] == 1
    loss_fn = nn.BCEWithLogitsLoss() if binary else nn.CrossEntropyLoss()
    started = time.perf_counter()
    accuracy, epoch = 0.0, 0
    for epoch in range(1, max_epochs + 1):  # noqa: B007 (returned: epochs actually run)
        model.train()
        for idx in torch.randperm(len(xt), generator=gen).split(batch_size):
            out = model(xt[idx])
            loss = loss_fn(out[:, 0], yt[idx].float()) if binary else loss_fn(out, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        accuracy = float((labels_from_scores(teacher_scores(model, X)) == y).mean())
        if accuracy >= stop_at_train_accuracy:
            break
    model.eval()
    return {"epochs": epoch, "seconds": time.perf_counter() - started, "train_accuracy": accuracy}


def train_mlp(X: np.ndarray, y: np.ndarray, hidden: Sequence[int] = (256, 256), *, lr: float = 1e-3,
              batch_size: int = 256, max_epochs: int = 200, weight_decay: float = 0.0, seed: int = 0,
              stop_at_train_accuracy: float = 1.0) -> tuple[nn.Module, dict[str, Any]]:
    """A ReLU `MLP` teacher (kdforge.models.builtin) trained by `train_classifier`; two classes get one logit."""
    from kdforge.models.builtin import MLP

    n_classes = int(np.max(y)) + 1 if len(y) else 2
    torch.manual_seed(seed)
    model = MLP(input_shape=(np.shape(X)[1],), num_classes=1 if n_classes <= 2 else n_classes, hidden=tuple(hidden))
    info = train_classifier(model, X, y, lr=lr, batch_size=batch_size, max_epochs=max_epochs,
                            weight_decay=weight_decay, seed=seed, stop_at_train_accuracy=stop_at_train_accuracy)
    return model, info
