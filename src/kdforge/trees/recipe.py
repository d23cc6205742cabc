"""Tree recipes: distil a teacher on tabular data into a decision tree from YAML (`kdforge tree RECIPE`).

    name: breast_cancer_mlp_depth4
    data: {source: sklearn:breast_cancer, test_size: 0.25}
    teacher: {model: builtin:mlp, args: {hidden: [64, 64]}, train: {epochs: 200, lr: 1.0e-3, batch_size: 32}}
    inputs: {sampler: munge, munge_p: 0.5, munge_s: 1.0}
    distiller: {method: lrh, max_depth: 4, top_k: 50, literals: sensitivity}
    baselines: [cart, trepan]

The data are split (stratified) into train and test; features are standardised for the teacher with train
statistics, but the trees see the original units, so thresholds read as data values. The teacher is trained
first (Adam, cross-entropy) or loaded (`checkpoint:` / `path:`, as in distillation recipes). Distillers draw
their fresh inputs from MUNGE applied to the training inputs (`sampler: munge`, Bucila et al. 2006) or split
the training pool (`sampler: pool`). Fidelity is reported twice: on fresh sampler draws (the estimator's own
bound) and on the held-out real test inputs.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from kdforge import io
from kdforge.errors import KDForgeError, RecipeError
from kdforge.metrics.fidelity import clopper_pearson_lower
from kdforge.trees.junta import JuntaDistiller, NotAJuntaError
from kdforge.trees.lrh import LRHTreeDistiller
from kdforge.trees.soft_tree import SoftDecisionTree
from kdforge.trees.surrogate import SurrogateTree
from kdforge.trees.trepan import TrepanTree
from kdforge.validation import did_you_mean

METHODS = {"lrh": LRHTreeDistiller, "junta": JuntaDistiller, "cart": SurrogateTree, "trepan": TrepanTree,
           "soft_tree": SoftDecisionTree}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TreeData(_Strict):
    source: str = Field(description="sklearn:breast_cancer | sklearn:wine | sklearn:iris | sklearn:digits | py:...")
    args: dict[str, Any] = Field(default_factory=dict)
    test_size: float = Field(0.25, gt=0, lt=1)
    split_seed: int = 0
    feature_names: list[str] | None = Field(None, description="Default: the sklearn dataset's names, else x[j].")
    class_names: list[str] | None = Field(None, description="One per class id; default: the sklearn dataset's "
                                                            "target_names, else the ids.")


class TreeTeacherTrain(_Strict):
    epochs: int = Field(200, ge=1, description="Upper bound; training stops at 100% train accuracy.")
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(32, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0


class TreeTeacher(_Strict):
    model: str | None = Field(None, description="builtin:mlp | py:package.module:attr")
    args: dict[str, Any] = Field(default_factory=dict)
    path: str | None = Field(None, description="A saved kdforge model folder (trained on standardised inputs).")
    checkpoint: str | None = None
    train: TreeTeacherTrain | None = None
    layers: list[str] | None = Field(None, description="Module names whose outputs form phi (default: all leaves).")


class TreeInputs(_Strict):
    sampler: Literal["munge", "pool"] = "munge"
    munge_p: float = Field(0.5, ge=0, le=1)
    munge_s: float = Field(1.0, gt=0)
    categorical: list[int] = Field(default_factory=list, description="Feature indices MUNGE swaps, never blurs.")


class TreeDistillerSpec(BaseModel):
    """`method` plus the estimator's own keyword arguments (checked against its signature)."""

    model_config = ConfigDict(extra="allow")
    method: Literal["lrh", "junta", "cart", "trepan", "soft_tree"] = "lrh"

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TreeRecipe(_Strict):
    name: str = "tree"
    output_dir: str | None = None
    seed: int = 0
    data: TreeData
    teacher: TreeTeacher
    inputs: TreeInputs = Field(default_factory=TreeInputs)
    distiller: TreeDistillerSpec = Field(default_factory=TreeDistillerSpec)
    baselines: list[Literal["cart", "trepan", "soft_tree"]] = Field(default_factory=lambda: ["cart"])
    confidence: float = Field(0.95, gt=0, lt=1)


_RESERVED = {"teacher", "sampler", "representation", "layers", "random_state", "confidence"}


def estimator_class(method: str):
    return METHODS[method]


def check_distiller_params(method: str, params: dict[str, Any], where: str) -> None:
    cls = estimator_class(method)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", *_RESERVED)]
    for key in params:
        if key not in accepted:
            raise RecipeError(f"{where}: {cls.__name__} has no parameter {key!r}.{did_you_mean(key, accepted)} "
                              f"Its parameters: {', '.join(accepted)}.")


def load_tree_recipe(path: str | Path, overrides: list[str] | None = None) -> TreeRecipe:
    """Read and validate a tree recipe (unknown keys and estimator parameters are errors with did-you-mean)."""
    from kdforge.recipe import read_yaml, validate_document

    recipe = validate_document(TreeRecipe, read_yaml(path, examples="recipes/tree/"), overrides)
    teacher = recipe.teacher
    if (teacher.model is None) == (teacher.path is None):
        raise RecipeError("recipe.teacher: give exactly one of 'model' (a factory, with 'train' or 'checkpoint') "
                          "or 'path' (a saved kdforge model folder).")
    if teacher.model is not None and teacher.train is None and teacher.checkpoint is None:
        raise RecipeError("recipe.teacher: the teacher has no weights. Add 'train:' (train it first on the data) "
                          "or 'checkpoint:' (weights for 'model').")
    check_distiller_params(recipe.distiller.method, recipe.distiller.params, "recipe.distiller")
    recipe._base_dir = str(path.resolve().parent)  # type: ignore[attr-defined]
    return recipe


def _load_arrays(spec: TreeData, base_dir: str | None
                 ) -> tuple[np.ndarray, np.ndarray, list[str] | None, list[str] | None]:
    from kdforge.data import DATASETS  # importing the package registers the sources
    from kdforge.imports import is_py_ref, resolve_py_ref

    if is_py_ref(spec.source):
        out = resolve_py_ref(spec.source, where="recipe.data.source", search_dir=base_dir)(**spec.args)
        x, y = np.asarray(out[0]), np.asarray(out[1])
        names = classes = None
    else:
        raw = DATASETS.get(spec.source, where="recipe.data.source")()
        x, y = raw.x.reshape(len(raw.x), -1), raw.y
        names = classes = None
        if spec.source.startswith("sklearn:"):
            import sklearn.datasets

            loader = getattr(sklearn.datasets, f"load_{spec.source.removeprefix('sklearn:')}", None)
            bunch = loader() if loader is not None else None
            names = list(bunch.feature_names) if hasattr(bunch, "feature_names") else None
            classes = [str(c) for c in bunch.target_names] if hasattr(bunch, "target_names") else None
    names = spec.feature_names or names
    if names is not None and len(names) != x.shape[1]:
        raise RecipeError(f"recipe.data.feature_names: {len(names)} names for {x.shape[1]} features.")
    classes = spec.class_names or classes
    n_classes = int(y.max()) + 1 if len(y) else 0
    if classes is not None and len(classes) != n_classes:
        raise RecipeError(f"recipe.data.class_names: {len(classes)} names for {n_classes} classes (ids 0.."
                          f"{n_classes - 1}); give one name per class.")
    return x.astype(np.float64), y.astype(np.int64), names, classes


def _teacher(recipe: TreeRecipe, x_train: np.ndarray, y_train: np.ndarray, out: Path) -> tuple[Any, dict]:
    from kdforge.models import DataInfo, build_model, load_saved_model, load_state_into, save_model
    from kdforge.trees.teachers import train_classifier

    spec = recipe.teacher
    base = Path(recipe._base_dir)  # type: ignore[attr-defined]
    if spec.path is not None:
        model, meta = load_saved_model(base / spec.path, "recipe.teacher.path", base)
        return model.eval(), {"source": spec.path}
    import torch

    torch.manual_seed(spec.train.seed if spec.train else recipe.seed)
    info = DataInfo((x_train.shape[1],), int(y_train.max()) + 1)
    model, args = build_model(spec.model, spec.args, info, "recipe.teacher", base)
    if spec.checkpoint is not None:
        load_state_into(model, io.load_weights_file(base / spec.checkpoint, "recipe.teacher.checkpoint"),
                        "recipe.teacher.checkpoint")
        return model.eval(), {"source": spec.checkpoint}
    cfg = spec.train
    stats = train_classifier(model, x_train, y_train, lr=cfg.lr, batch_size=cfg.batch_size, max_epochs=cfg.epochs,
                             weight_decay=cfg.weight_decay, seed=cfg.seed)
    save_model(model, out / "teacher", spec.model, args, ["x"])
    return model.eval(), {"source": "trained", **stats}


class _Standardized:
    """X (original units) -> the teacher's scores / activations on standardised inputs (picklable callables)."""

    def __init__(self, model, mean: np.ndarray, std: np.ndarray, layers: list[str] | None = None) -> None:
        self.model, self.mean, self.std, self.layers = model, mean, std, layers

    def __call__(self, X: np.ndarray) -> np.ndarray:
        from kdforge.trees.teachers import module_activations, teacher_scores

        Xs = ((np.asarray(X, dtype=np.float64) - self.mean) / self.std).astype(np.float32)
        if self.layers is None:
            return teacher_scores(self.model, Xs, "recipe.teacher")
        return module_activations(self.model, self.layers, Xs, "recipe.teacher")


def run_tree_recipe(path: str | Path, out_dir: str | Path | None = None, overwrite: bool = False,
                    overrides: list[str] | None = None) -> dict[str, Any]:
    """Everything `kdforge tree RECIPE` does. Writes into out_dir: teacher/, <method>/tree.{txt,json,png},
    <method>/fidelity.txt, report.json and report.md. Returns the report."""
    from sklearn.model_selection import train_test_split

    from kdforge.trees.munge import MungeSampler
    from kdforge.trees.teachers import check_layers, default_layers, labels_from_scores

    recipe = load_tree_recipe(path, overrides)
    out = Path(out_dir or recipe.output_dir or f"runs/{recipe.name}")
    io.empty_dir(out, overwrite)
    io.write_text(out / "recipe.resolved.yaml", yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    x, y, names, class_names = _load_arrays(recipe.data, recipe._base_dir)  # type: ignore[attr-defined]
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=recipe.data.test_size,
                                                        random_state=recipe.data.split_seed, stratify=y)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-8
    t0 = time.perf_counter()
    model, teacher_info = _teacher(recipe, ((x_train - mean) / std).astype(np.float32), y_train, out)
    teacher_seconds = time.perf_counter() - t0
    layers = recipe.teacher.layers if recipe.teacher.layers is not None else default_layers(model)
    check_layers(model, layers, "recipe.teacher")
    teacher = _Standardized(model, mean, std)
    phi = _Standardized(model, mean, std, layers)
    teacher_test = labels_from_scores(teacher(x_test))
    sampler = MungeSampler(x_train, recipe.inputs.munge_p, recipe.inputs.munge_s, recipe.inputs.categorical) \
        if recipe.inputs.sampler == "munge" else None
    report: dict[str, Any] = {
        "name": recipe.name, "data": {"source": recipe.data.source, "train": len(x_train), "test": len(x_test),
                                      "features": x.shape[1]},
        "teacher": {**teacher_info, "seconds": teacher_seconds, "layers": layers,
                    "test_accuracy": float((teacher_test == y_test).mean())},
        "sampler": recipe.inputs.sampler, "class_names": class_names, "methods": {},
    }
    runs = [(recipe.distiller.method, recipe.distiller.params)] + [(b, {}) for b in recipe.baselines
                                                                     if b != recipe.distiller.method]
    for method, params in runs:
        cls = estimator_class(method)
        kwargs = dict(params)
        if method == "lrh":
            kwargs["representation"] = phi
        if method in ("cart", "trepan") and "max_depth" in recipe.distiller.params and not params:
            kwargs["max_depth"] = recipe.distiller.params["max_depth"]  # depth-matched baselines
        if method == "trepan" and not params:
            kwargs["max_leaf_nodes"] = recipe.distiller.params.get("max_leaf_nodes") or \
                2 ** recipe.distiller.params.get("max_depth", 3)
        if method == "soft_tree" and not params:
            kwargs["depth"] = recipe.distiller.params.get("max_depth", 3)
        est = cls(teacher, sampler=sampler, confidence=recipe.confidence, random_state=recipe.seed, **kwargs)
        t0 = time.perf_counter()
        try:
            est.fit(x_train)
        except NotAJuntaError as exc:  # a finding about the teacher, said with the field that chose the method
            raise NotAJuntaError(f"recipe.distiller (method: junta): {exc}") from exc
        except KDForgeError:
            raise
        except ValueError as exc:  # a parameter value the estimator rejected
            raise RecipeError(f"recipe.distiller ({method}): {exc}") from exc
        seconds = time.perf_counter() - t0
        agree = int((est.predict(x_test) == teacher_test).sum())
        lower = clopper_pearson_lower(agree, len(x_test), recipe.confidence)
        from kdforge.trees.render import fidelity_statement

        statement_test = fidelity_statement(agree, len(x_test), lower, recipe.confidence, "inputs like the test split",
                                            "held-out test samples")
        title = f"{recipe.name}: {method}, test fidelity {agree / len(x_test):.3f}"
        est.save(out / method, names, title, class_names)
        io.write_text(out / method / "fidelity.txt", f"{fresh_label(recipe.inputs.sampler)}: "
                      f"{est.fidelity_statement()}\nOn the real test split: {statement_test}\n")
        entry = {"seconds": seconds, "leaves": int(est.n_leaves_),
                 "test_fidelity": agree / len(x_test), "test_fidelity_lower": lower,
                 "test_accuracy": float((est.predict(x_test) == y_test).mean()),
                 "fresh_fidelity": est.fidelity_, "fresh_fidelity_lower": est.fidelity_lower_,
                 "n_fresh": est.n_fidelity_, "samples": est.n_samples_, "statement": statement_test,
                 "fresh_statement": est.fidelity_statement()}
        if method == "lrh":
            entry.update(probes=est.n_probes_, exhaustive=est.n_exhaustive_, depth=est.depth_,
                         literals=len(est.literals_), train_agreement=est.train_agreement_,
                         lrh_diagnostic=est.lrh_diagnostic_)
        if method == "junta":
            entry.update(relevant=[names[i] if names else f"x[{i}]" for i in est.relevant_.tolist()],
                         influence=[float(est.influence_[i]) for i in est.relevant_], threshold=est.threshold_,
                         junta_error=est.junta_error_, queries=est.n_queries_)
        report["methods"][method] = entry
    io.write_json(out / "report.json", report)
    io.write_text(out / "report.md", _markdown(report))
    report["out_dir"] = str(out)
    return report


def fresh_column(sampler: str) -> str:
    """The name of the 'fresh' fidelity column, saying which inputs it is measured on."""
    return "MUNGE fidelity" if sampler == "munge" else "pool fidelity"


def fresh_label(sampler: str) -> str:
    """Which distribution the 'fresh' bound is about: MUNGE's synthetic inputs are not the real distribution."""
    if sampler == "munge":
        return "On fresh MUNGE samples (synthetic inputs made from the training split; a bound about MUNGE's " \
               "distribution, not about real inputs)"
    return "On held-out rows of the training pool"


def _markdown(report: dict[str, Any]) -> str:
    from kdforge.trees.render import lrh_diagnostic_lines

    t = report["teacher"]
    lines = [f"# Tree distillation: {report['name']}", "",
             f"Data {report['data']['source']} ({report['data']['train']} train / {report['data']['test']} test, "
             f"{report['data']['features']} features); teacher test accuracy {t['test_accuracy']:.4f}; "
             f"fresh inputs from {report['sampler']}"
             + (f"; classes: {', '.join(f'{i} = {c}' for i, c in enumerate(report['class_names']))}"
                if report.get("class_names") else "") + ".", "",
             f"'{fresh_column(report['sampler'])}' columns: {fresh_label(report['sampler']).removeprefix('On ')}; "
             "'test' columns: the real "
             "held-out rows.", "",
             f"| method | leaves | test fidelity | 95% lower | {fresh_column(report['sampler'])} | 95% lower | "
             "test accuracy | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for m, r in report["methods"].items():
        lines.append(f"| {m} | {r['leaves']} | {r['test_fidelity']:.4f} | {r['test_fidelity_lower']:.4f} | "
                     f"{r['fresh_fidelity']:.4f} | {r['fresh_fidelity_lower']:.4f} | {r['test_accuracy']:.4f} | "
                     f"{r['seconds']:.2f} |")
    first = next(iter(report["methods"]))
    lines += ["", f"{first}: the tree {report['methods'][first]['statement']}.", ""]
    for m, r in report["methods"].items():
        if "relevant" in r:
            lines += [f"### {m}", "", f"Relevant inputs (influence >= {r['threshold']:.4g}): " + (", ".join(
                f"{name} ({inf:.3f})" for name, inf in zip(r["relevant"], r["influence"], strict=True)) or "none")
                + f"; the tree disagrees with the teacher on {r['junta_error']:.2%} of its fitting queries.", ""]
        if "lrh_diagnostic" in r:
            lines += [f"### {m}", "", *lrh_diagnostic_lines(r["lrh_diagnostic"]), ""]
    return "\n".join(lines)
