"""The Python way in: `kdforge.distill` (train one student you hold) and `kdforge.Distiller` / `kdforge.run` (the
whole run a recipe describes: teacher training, seeds, scratch twins, report, run folder).

Both go through the application's one build step (`kdforge.app.build.build`), so Python and YAML runs are checked
and trained the same way. Models, loss modules and data may be Python objects; everything else is the recipe's
vocabulary (`TrainConfig`, loss names and parameters, taps).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from kdforge.app.build import build
from kdforge.app.data import load_recipe_data
from kdforge.app.given import Given
from kdforge.app.run import run_recipe
from kdforge.app.rundir import RunResult
from kdforge.data import DataBundle
from kdforge.data.adapters import bundle_from_splits
from kdforge.errors import RecipeError
from kdforge.evaluate import accuracy_summary, agreement_summary, positions, predict_logits
from kdforge.lm.cross_data import is_paired, teacher_view
from kdforge.losses import LOSSES  # importing the package registers every loss
from kdforge.losses.base import DistillLoss, Outputs, Targets
from kdforge.models import count_params
from kdforge.recipe import DataSpec, LossTerm, Recipe, TrainConfig, recipe_from_dict

LossLike = str | LossTerm | Mapping[str, Any] | nn.Module
ModelLike = nn.Module | str | Mapping[str, Any]

OBJECT = "object:"  # the recipe's placeholder for a model or data set given as a Python object


@dataclass
class DistillResult:
    """What `distill` measured: test metrics of teacher and student, and the validation history."""

    teacher: dict[str, float]
    student: dict[str, float]
    evals: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    out_dir: Path | None = None


class ModuleLoss(DistillLoss):
    """A user's own `nn.Module` loss with the loss contract's call, `forward(student, teacher, targets)` over
    `Outputs`/`Targets`, used as one term; it reads the teacher's logits unless it says `needs_teacher = False`."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.needs_teacher = bool(getattr(module, "needs_teacher", True))

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        return self.module(student, teacher, targets)


def _term_name(module: nn.Module, taken: set[str]) -> str:
    registered = [name for name in LOSSES.names() if LOSSES.get(name) is type(module)]
    base = registered[0] if registered else re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", type(module).__name__).lower()
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def loss_terms(losses: Sequence[LossLike]) -> tuple[list[LossTerm], dict[str, nn.Module]]:
    """Recipe terms for `losses` (names, `{"name": ..., "weight": ..., **params}` dicts, `LossTerm`s, loss modules,
    or `{"loss": module, "weight": w}`), and the modules given as objects, by term name."""
    terms: list[LossTerm] = []
    modules: dict[str, nn.Module] = {}
    for i, loss in enumerate(losses):
        weight = 1.0
        if isinstance(loss, Mapping) and isinstance(loss.get("loss"), nn.Module):
            unknown = set(loss) - {"loss", "weight"}
            if unknown:
                raise RecipeError(f"losses[{i}]: a loss given as a module takes only 'loss' and 'weight'; got "
                                  f"{sorted(unknown)} (set parameters when you build the module).")
            loss, weight = loss["loss"], float(loss.get("weight", 1.0))
        if isinstance(loss, nn.Module):
            name = _term_name(loss, {t.name for t in terms})
            modules[name] = loss if isinstance(loss, DistillLoss) else ModuleLoss(loss)
            terms.append(LossTerm(name=name, weight=weight))
        elif isinstance(loss, LossTerm):
            terms.append(loss)
        elif isinstance(loss, str):
            terms.append(LossTerm(name=loss))
        elif isinstance(loss, Mapping):
            terms.append(LossTerm(**loss))
        else:
            raise RecipeError(f"losses[{i}]: expected a loss name, a dict, a LossTerm or a loss module; got "
                              f"{type(loss).__name__}.")
    if not terms:
        raise RecipeError("losses: give at least one loss, e.g. ['kd', 'ce'].")
    return terms, modules


def as_bundle(data: Any, base_dir: str | Path | None = None) -> DataBundle:
    """A DataBundle from: a DataBundle, a DataSpec, a source name ('sklearn:digits'), or {'train', 'test'[, 'val']}
    splits, each given as (X, y) arrays, a dict of arrays, a TensorData, a TensorDataset, a map-style Dataset of
    tuples or dicts, or a DataLoader."""
    if isinstance(data, DataBundle):
        return data
    if isinstance(data, str):
        data = DataSpec(source=data)
    if isinstance(data, DataSpec):
        return load_recipe_data(data, base_dir)
    if isinstance(data, Mapping):
        return bundle_from_splits(data, where="data")
    raise RecipeError(f"data: got {type(data).__name__}; give a source name like 'sklearn:digits', a DataSpec, or a "
                      "dict with 'train' and 'test' splits (arrays, tensors, datasets or data loaders).")


Inputs = Sequence[str] | Mapping[str, str]  # batch keys, or {forward argument: batch key} (a recipe's `inputs`)


def _inputs_entry(inputs: Inputs) -> list[str] | dict[str, str]:
    return dict(inputs) if isinstance(inputs, Mapping) else list(inputs)


def _model_entry(model: Any, inputs: Inputs, side: str) -> tuple[dict[str, Any], Any]:
    """(the recipe's model section, the object the run uses instead or None)."""
    if isinstance(model, nn.Module) or (callable(model) and side == "student" and not isinstance(model, str)):
        return {"model": f"{OBJECT}{side}", "inputs": _inputs_entry(inputs)}, model
    if isinstance(model, str):
        key = "model" if ":" in model else "path"
        return {key: model, "inputs": _inputs_entry(inputs)}, None
    if isinstance(model, Mapping):
        return {"inputs": _inputs_entry(inputs), **dict(model)}, None
    raise RecipeError(f"{side}: got {type(model).__name__}; give a torch.nn.Module, a model spec such as "
                      "'builtin:mlp' or 'hf:DIR', a saved model folder, or a dict of the recipe's model section.")


def _taps(taps: Mapping[str, Mapping[str, str]] | None) -> dict[str, dict[str, str]]:
    taps = {side: dict(paths) for side, paths in (taps or {}).items()}
    unknown = set(taps) - {"student", "teacher"}
    if unknown:
        raise RecipeError(f"taps: unknown side(s) {sorted(unknown)}; use 'student' and 'teacher'.")
    return taps


class Distiller:
    """Everything a recipe can do, from Python objects: `Distiller(teacher, student, data, ...).run(out_dir)`.

    Args:
        teacher: A module (used as it is, or trained first when `teacher_train` is given), a model spec
            ('builtin:mlp', 'hf:DIR', 'py:pkg.mod:attr'), a saved kdforge model folder, or a recipe teacher section.
        student: A module (each seed and the scratch twin start from a copy of its weights), a zero-argument
            factory returning a new module (called once per seed, after seeding), or a spec as for the teacher.
        data: See `as_bundle`; a source name or DataSpec keeps the recipe's split settings.
        losses: See `loss_terms`.
        train: The student's `TrainConfig` (default: 10 epochs of Adam at lr 1e-3).
        teacher_train: Train the teacher first with cross-entropy on the labelled data, with these settings.
        taps: `{"student": {name: module.path}, "teacher": {...}}` for feature losses.
        inputs / teacher_inputs: Batch keys passed to the student's / teacher's forward; `teacher_inputs` may map
            the teacher's forward arguments to other batch keys, e.g. `{"input_ids": "teacher_input_ids",
            "attention_mask": "teacher_attention_mask"}` for rows paired across tokenizers (docs/llm.md).
        seeds, baseline, generations, online, confidence, eval_batch_size, name: as in a recipe.
    """

    def __init__(self, teacher: ModelLike, student: ModelLike | Callable[[], nn.Module], data: Any,
                 losses: Sequence[LossLike] = ("kd", "ce"), *, train: TrainConfig | None = None,
                 teacher_train: TrainConfig | None = None, taps: Mapping[str, Mapping[str, str]] | None = None,
                 inputs: Sequence[str] = ("x",), teacher_inputs: Inputs | None = None,
                 seeds: Sequence[int] = (0,), baseline: bool = True, generations: int = 1, online: bool = False,
                 confidence: float = 0.95, eval_batch_size: int = 512, name: str = "run") -> None:
        self.teacher, self.student, self.data, self.losses = teacher, student, data, losses
        self.train, self.teacher_train, self.taps = train, teacher_train, taps
        self.inputs, self.teacher_inputs = inputs, teacher_inputs
        self.seeds, self.baseline, self.generations, self.online = seeds, baseline, generations, online
        self.confidence, self.eval_batch_size, self.name = confidence, eval_batch_size, name

    def plan(self) -> tuple[Recipe, Given]:
        """The recipe this run is (data only: what `recipe.resolved.yaml` will hold) and the objects beside it."""
        terms, modules = loss_terms(self.losses)
        teacher, teacher_obj = _model_entry(self.teacher, self.teacher_inputs or self.inputs, "teacher")
        student, student_obj = _model_entry(self.student, self.inputs, "student")
        if self.teacher_train is not None:
            teacher["train"] = self.teacher_train.model_dump()
        if self.online:
            teacher["online"] = True
        bundle = None
        if isinstance(self.data, DataSpec | str):
            data = (self.data if isinstance(self.data, DataSpec) else DataSpec(source=self.data)).model_dump()
        else:
            bundle, data = as_bundle(self.data), {"source": f"{OBJECT}data"}
        document = {
            "name": self.name, "seeds": list(self.seeds), "teacher": teacher, "student": student, "data": data,
            "taps": _taps(self.taps), "losses": [t.model_dump() for t in terms],
            "train": (self.train or TrainConfig()).model_dump(), "baseline": self.baseline,
            "generations": self.generations,
            "eval": {"confidence": self.confidence, "batch_size": self.eval_batch_size},
        }
        recipe = recipe_from_dict(document, base_dir=Path.cwd(), provided=modules)
        return recipe, Given(teacher=teacher_obj, student=student_obj, data=bundle, losses=modules)

    def run(self, out_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False) -> RunResult:
        """Train (teacher if asked, a student per seed, their scratch twins), evaluate and write the report into
        `out_dir` (default: a new temporary folder, kept; `RunResult.save(dir)` copies it)."""
        recipe, given = self.plan()
        out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="kdforge-run-"))
        return run_recipe(recipe, out, resume=resume, overwrite=overwrite or out_dir is None, given=given)


def run(teacher: ModelLike, student: ModelLike | Callable[[], nn.Module], data: Any,
        losses: Sequence[LossLike] = ("kd", "ce"), out_dir: str | Path | None = None, **options: Any) -> RunResult:
    """`Distiller(teacher, student, data, losses, **options).run(out_dir)`: the run folder, report and models."""
    return Distiller(teacher, student, data, losses, **options).run(out_dir)


def distill(teacher: nn.Module, student: nn.Module, data: Any, losses: Sequence[LossLike] = ("kd", "ce"),
            train: TrainConfig | None = None, taps: Mapping[str, Mapping[str, str]] | None = None,
            inputs: Sequence[str] = ("x",), out_dir: str | Path | None = None, resume: bool = False,
            confidence: float = 0.95, teacher_inputs: Inputs | None = None) -> tuple[nn.Module, DistillResult]:
    """Train `student` to imitate `teacher` on `data` and measure how well it does (no report, no baseline; see
    `Distiller` for the whole run).

    Args:
        teacher: A trained module; it is put in eval mode and frozen.
        student: The module to train (in place).
        data: See `as_bundle`. The student trains on the training split; validation (if any) runs each epoch.
        losses: See `loss_terms`, e.g.
            `[{"name": "kd", "weight": 0.9, "temperature": 4.0}, {"name": "ce", "weight": 0.1}]`.
        train: Training settings (`TrainConfig`); defaults to 10 epochs of Adam at lr 1e-3.
        taps: `{"student": {name: module.path}, "teacher": {...}}` for feature losses.
        inputs: Batch keys passed to both models' forward (the student's only when `teacher_inputs` is given).
        out_dir: Where checkpoints and the log go; a temporary folder (deleted afterwards) when None.
        resume: Continue from the latest checkpoint in `out_dir`.
        confidence: Level of the reported Clopper-Pearson intervals.
        teacher_inputs: The teacher's batch keys, or {forward argument: batch key}: for rows paired across
            tokenizers (text:stdlib_lm or text:lm_file with `teacher_tokenizer`), the teacher reads its own tokens,
            e.g. `{"input_ids": "teacher_input_ids", "attention_mask": "teacher_attention_mask"}`.

    Returns:
        The trained student and a `DistillResult` with test accuracy and teacher agreement; across tokenizers,
        each model's accuracy on its own tokens, the agreement at the aligned span ends (through the tokens both
        vocabularies share) and both models' bits per byte.
    """
    bundle = as_bundle(data)
    cfg = train or TrainConfig()
    inputs = list(inputs)
    t_inputs = _inputs_entry(teacher_inputs) if teacher_inputs is not None else inputs
    distiller = Distiller(teacher, student, bundle, losses, train=cfg, taps=taps, inputs=inputs,
                          teacher_inputs=t_inputs, baseline=False, confidence=confidence)
    recipe, given = distiller.plan()
    paired = is_paired(bundle.test)  # across tokenizers: no entry-by-entry agreement on validation rows
    teacher_val = None
    if bundle.val is not None and not is_paired(bundle.val):
        teacher_val = predict_logits(teacher, bundle.val, t_inputs)
    with tempfile.TemporaryDirectory(prefix="kdforge-") as tmp:
        folder = Path(out_dir) if out_dir is not None else Path(tmp)
        with build(recipe, student=student, teacher=teacher, data=bundle, out_dir=folder, seed=cfg.seed,
                   teacher_val=teacher_val, name="student", given=given) as job:
            job.preflight()
            summary = job.fit(resume)
    labels = bundle.test.tensors["labels"]
    teacher_logits = predict_logits(teacher, bundle.test, t_inputs)
    student_logits = predict_logits(student, bundle.test, inputs)
    if paired:
        teacher_side, student_side = _paired_test_figures(bundle, teacher_logits, student_logits, confidence)
    else:
        flat = positions(bundle.test)  # token tasks: agreement counts the positions accuracy counts
        teacher_side = accuracy_summary(labels, teacher_logits, confidence)
        student_side = {**accuracy_summary(labels, student_logits, confidence),
                        **agreement_summary(flat(teacher_logits), flat(student_logits), confidence)}
    result = DistillResult(
        teacher={**teacher_side, "params": count_params(teacher)},
        student={**student_side, "params": count_params(student)},
        evals=summary.evals, steps=summary.steps, seconds=summary.seconds,
        out_dir=Path(out_dir) if out_dir is not None else None,
    )
    return student, result


def _paired_test_figures(bundle: DataBundle, teacher_logits: Tensor, student_logits: Tensor,
                         confidence: float) -> tuple[dict[str, float], dict[str, float]]:
    """(teacher, student) test figures on rows paired across tokenizers: each model's accuracy on its own tokens
    and bits per byte, and the student's agreement at the aligned span ends, as the report gives them."""
    from kdforge.app.evaluation import lm_bits_per_byte, span_end_logits

    test = bundle.test
    own = teacher_view(test)
    teacher_side = {**accuracy_summary(own.tensors["labels"], teacher_logits, confidence),
                    **lm_bits_per_byte(teacher_logits, own.tensors["labels"], own)}
    s_ends, t_ends = span_end_logits(student_logits, teacher_logits, test, getattr(bundle, "vocab_map", None))
    student_side = {**accuracy_summary(test.tensors["labels"], student_logits, confidence),
                    **agreement_summary(t_ends, s_ends, confidence),
                    **lm_bits_per_byte(student_logits, test.tensors["labels"], test)}
    return teacher_side, student_side
