"""Recipes: the validated description of a distillation run, from YAML (`load_recipe`) or built in Python.

This is the only module that reads YAML, and it uses `yaml.safe_load`: a recipe is data. Unknown keys are
errors (with a did-you-mean), and every message names the field as `recipe.<path>`.
"""

from __future__ import annotations

import inspect
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from kdforge.errors import RecipeError
from kdforge.losses import LOSSES  # importing the package registers every loss
from kdforge.prefixes import SERVED_PREFIX
from kdforge.validation import did_you_mean

Document = TypeVar("Document", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrainConfig(_Strict):
    """How one model is trained. The same block configures the teacher (when trained first) and the student."""

    epochs: int = Field(10, ge=1, description="Passes over the training set (ignored when max_steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps; overrides epochs.")
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, le=1, description="SGD only.")
    scheduler: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    grad_clip: float | None = Field(None, gt=0, description="Max global gradient norm.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    mixed_precision: Literal["no", "fp16", "bf16"] | None = Field(
        None, description="None defers to `accelerate launch`/`accelerate config`."
    )
    eval_every: int | None = Field(None, ge=1, description="Validate every N steps; default once per epoch.")
    checkpoint_every: int | None = Field(None, ge=1, description="Also checkpoint every N steps; default: by time "
                                         "(checkpoint_minutes), at the end, before an early stop, on SIGTERM/SIGINT.")
    checkpoint_minutes: float | None = Field(10.0, gt=0, description="Checkpoint when this many wall-clock minutes "
                                             "passed since the last one; null: only by steps and events.")
    keep_checkpoints: int = Field(1, ge=1)
    select: Literal["last", "best"] = Field("last", description="Keep the last student, or the best on `monitor`.")
    monitor: str = Field("val/accuracy", description="Validation metric for select=best and patience "
                         "(maximised; a name ending in loss or mse is minimised).")
    patience: int | None = Field(None, ge=1, description="Stop after N evaluations without improvement.")
    seed: int = 0
    progress: bool = True
    nonfinite: Literal["stop", "skip"] = Field(
        "stop", description="A NaN/inf loss stops the run (naming step, term and last checkpoint), or the step is "
        "skipped (no update) and counted.")
    max_nonfinite: int = Field(10, ge=1, description="nonfinite: skip stops the run after this many skipped steps.")
    activation_checkpointing: bool = Field(
        False, description="Recompute the student's repeated blocks (transformer layers) in the backward pass "
        "instead of storing their activations: less memory, about one more forward per step. Any layout (one "
        "process, DDP, FSDP); a student without repeated blocks is refused.")


class ModelSpec(_Strict):
    """Where a model comes from: a factory (`builtin:`/`py:`/`hf:`) with args, optionally with weights."""

    model: str | None = Field(None, description="builtin:mlp | builtin:cnn | py:package.module:attr | hf:DIR_OR_NAME")
    args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the factory.")
    path: str | None = Field(None, description="A model folder kdforge saved (model.json + model.safetensors).")
    checkpoint: str | None = Field(None, description="Weights for `model`: .safetensors, or .pt/.bin (weights only).")
    inputs: list[str] | dict[str, str] = Field(
        default_factory=lambda: ["x"], description="Batch keys passed to forward(), or {forward argument: batch "
        "key} when the model reads keys under other names (a cross-tokenizer teacher: {input_ids: "
        "teacher_input_ids, attention_mask: teacher_attention_mask}).")
    tokenizer: str | None = Field(None, description="Language models: hf:<folder> of this model's tokenizer, which "
                                  "kdforge doctor compares (default: the hf: model folder when it holds one, else "
                                  "data.args.tokenizer).")

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.model is None) == (self.path is None):
            raise ValueError("give exactly one of 'model' (a factory) or 'path' (a saved kdforge model folder)")
        if self.path is not None and self.checkpoint is not None:
            raise ValueError("'checkpoint' loads weights into 'model'; a saved 'path' already holds its weights")
        return self


class CacheSpec(_Strict):
    """The offline teacher cache (docs/cache.md). `cache: DIR` is short for `cache: {dir: DIR}`.

    Unset settings mean "whatever the store holds" when reading, and full float32 logits when building.
    """

    dir: str = Field(description="Folder of the teacher-output store (relative to the recipe file).")
    logits: Literal["full", "topk", "sampled", "topk_tail"] | None = Field(
        None, description="Full logits, the top-k per row, sampled tokens with counts (random-sampling KD), or "
                          "top-k log-probabilities + the exact tail mass (docs/cache.md).")
    k: int | None = Field(None, ge=1, description="topk, topk_tail: entries kept per row (default 64; 32 for "
                          "topk_tail).")
    samples: int | None = Field(None, ge=1, le=255, description="sampled: draws per position (default 12).")
    proposal_temperature: float | None = Field(None, gt=0, description="sampled: draw from the teacher at this "
                                               "temperature (default 1; importance-weighted otherwise).")
    seed: int | None = Field(None, ge=0, description="sampled: the draws' seed (default 0).")
    values: Literal["float16", "uint16", "uint8"] | None = Field(
        None, description="topk_tail: log-probability codes (default uint16).")
    indices: Literal["packed", "plain"] | None = Field(
        None, description="sampled, topk_tail: token ids bit-packed (ceil(log2 V) bits; default) or int16/int32.")
    dtype: Literal["float32", "float16", "bfloat16"] | None = Field(
        None, description="Stored values (default float32 for full logits, float16 for top-k).")
    features: list[str] | None = Field(None, description="Teacher taps to store (default: every taps.teacher).")
    tail: Literal["uniform", "renormalize"] = Field("uniform", description="How top-k rebuilds the distribution.")
    verify: bool = Field(True, description="Check every file's SHA-256 when the cache is opened.")
    chunk_rows: int = Field(4096, ge=1, description="Rows per resumable chunk while building.")
    max_batch_tokens: int | None = Field(None, ge=1, description="Building: at most this many tokens (rows x "
                                         "sequence length) per teacher batch, besides eval.batch_size rows.")

    @model_validator(mode="before")
    @classmethod
    def _from_dir(cls, value: Any) -> Any:
        return {"dir": value} if isinstance(value, str) else value


class TeacherSpec(ModelSpec):
    """The teacher: a model with weights, a model trained first on the labelled data (`train:`), or an
    ensemble of such models whose logits are averaged (`members:`)."""

    train: TrainConfig | None = Field(None, description="Train the teacher first (cross-entropy on all labels).")
    members: list[TeacherSpec] | None = Field(None, min_length=2, description="Ensemble: average their logits.")
    online: bool = Field(False, description="Train the teacher together with the student (deep mutual learning).")
    cache: CacheSpec | None = Field(None, description="Read teacher outputs from this store (built once if missing).")
    member_weights: list[float] | None = Field(None, description="Ensemble weights (default: equal).")

    @model_validator(mode="after")
    def _one_source(self) -> TeacherSpec:
        if (self.model or "").startswith(SERVED_PREFIX):  # a teacher behind an inference server (docs/cache.md)
            if isinstance(self.inputs, dict):
                raise ValueError("a served teacher is sent the data's own token ids; renamed keys (cross-tokenizer "
                                 "rows) are not supported for it: give inputs as a list")
            if self.cache is None:
                raise ValueError("a served teacher (served:URL) answers over HTTP and cannot run inside the training "
                                 "step; add 'cache: DIR': its log-probabilities are stored once, students read them")
            if self.train is not None or self.checkpoint is not None or self.online:
                raise ValueError("a served teacher (served:URL) keeps its weights on the server; drop 'train', "
                                 "'checkpoint' and 'online'")
            if self.cache.logits not in (None, "topk"):
                raise ValueError("a served teacher gives its top-k log-probabilities: set cache.logits: topk (not "
                                 f"{self.cache.logits!r})")
        if self.cache is not None and self.members is None and self.model is None and self.path is None:
            if self.checkpoint is not None or self.train is not None:
                raise ValueError("'checkpoint' and 'train' need 'model'; a cache alone gives 'cache' only")
            if isinstance(self.inputs, dict):
                raise ValueError("a teacher that reads renamed keys (cross-tokenizer rows) needs its model beside "
                                 "'cache': evaluation runs it on the test rows, which a cache alone cannot replay; "
                                 "give 'model' + 'checkpoint' or 'path'")
            return self  # cache only: students train from the store, evaluation replays it (docs/cache.md)
        if self.online and (self.members is not None or self.train is not None):
            raise ValueError("an online teacher (mutual learning) trains with the student: drop 'members'/'train'")
        if self.members is None:
            if self.member_weights is not None:
                raise ValueError("'member_weights' needs 'members'")
            return ModelSpec._one_source(self)
        if self.model is not None or self.path is not None or self.checkpoint is not None or self.train is not None:
            raise ValueError("an ensemble teacher gives 'members' only; put model/path/checkpoint/train in each")
        if self.member_weights is not None:
            if len(self.member_weights) != len(self.members):
                raise ValueError(f"{len(self.member_weights)} member_weights for {len(self.members)} members")
            if any(not w > 0 for w in self.member_weights):
                raise ValueError("member_weights must all be > 0")
        return self


class DataSpec(_Strict):
    """A dataset and how it is split into train / val / test."""

    source: str = Field(description="sklearn:digits | sklearn:breast_cancer | sklearn:wine | sklearn:iris | py:...")
    args: dict[str, Any] = Field(default_factory=dict)
    test_size: float = Field(0.2, gt=0, lt=1)
    val_size: float = Field(0.1, ge=0, lt=1)
    split_seed: int = 0
    standardize: bool | None = Field(None, description="z-score features on train statistics; default per source.")
    student_labels: int | None = Field(
        None, ge=1, description="Labelled training samples the student may use (stratified); None = all."
    )
    transfer_set: bool = Field(
        True, description="With student_labels: the other training inputs join as an unlabelled transfer set."
    )
    class_names: list[str] | None = Field(
        None, description="One name per class id, for reports (default: the source's names, e.g. sklearn's "
                          "target_names, else the ids)."
    )

    @model_validator(mode="after")
    def _sizes(self) -> DataSpec:
        if self.test_size + self.val_size >= 1:
            raise ValueError(f"test_size + val_size must be < 1; got {self.test_size} + {self.val_size}")
        return self


FROM_TEACHER = "from_teacher"  # student.model: built from the recipe's own teacher (docs/encoders.md)


class PretrainSpec(ModelSpec):
    """Pre-train the compact student first (Turc et al. 2019, "Well-Read Students Learn Better"): this model (e.g.
    the student's architecture with a masked-LM head) trains with cross-entropy on its own data, once per run, and
    the task student starts from every tensor whose name and shape match."""

    data: DataSpec = Field(description="Unlabelled pre-training data, e.g. masked-LM rows (text:stdlib_mlm).")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Its training; `seed` fixes it per run.")


class StudentSpec(ModelSpec):
    """The student: a model spec, `model: from_teacher` (layers of the recipe's teacher), or a factory whose
    initial weights come from a pre-trained model (`pretrain:`)."""

    pretrain: PretrainSpec | None = Field(None, description="Pre-train a model first; the student starts from it.")


class LossTerm(BaseModel):
    """One term of the objective: a registered loss name, its weight, and its constructor arguments."""

    model_config = ConfigDict(extra="allow")

    name: str
    weight: float = 1.0
    start_step: int = Field(0, ge=0, description="First optimizer step (0-based) at which the term is active.")
    stop_step: int | None = Field(None, ge=1, description="The term is inactive from this step on (None: never).")
    progressive_steps: int | None = Field(
        None, ge=1, description="MobileBERT's progressive layer-wise transfer: from start_step, each layer pair "
        "(bottom first) trains alone for this many steps with the student layers below it frozen, then all pairs "
        "train together. Only for losses with layer pairs (fitnet, pkd, hidden_cos, at, tinybert ...).")

    @model_validator(mode="after")
    def _window(self) -> LossTerm:
        if self.stop_step is not None and self.stop_step <= self.start_step:
            raise ValueError(f"stop_step ({self.stop_step}) must be greater than start_step ({self.start_step})")
        return self

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TapsSpec(_Strict):
    """Named intermediate outputs: tap name -> dotted module path, for each model."""

    student: dict[str, str] = Field(default_factory=dict)
    teacher: dict[str, str] = Field(default_factory=dict)


class EvalSpec(_Strict):
    confidence: float = Field(0.95, gt=0, lt=1, description="Level of the Clopper-Pearson bounds.")
    batch_size: int = Field(512, ge=1)


class Recipe(_Strict):
    """A whole distillation run."""

    name: str = "run"
    output_dir: str | None = Field(None, description="Default: runs/<name>. The CLI's --out overrides it.")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="One student per seed.")
    teacher: TeacherSpec
    student: StudentSpec
    data: DataSpec
    taps: TapsSpec = Field(default_factory=TapsSpec)
    losses: list[LossTerm] = Field(min_length=1)
    train: TrainConfig = Field(default_factory=TrainConfig)
    baseline: bool = Field(True, description="Also train the student from scratch (ce only) with the same budget.")
    generations: int = Field(1, ge=1, description="Born-again: generation g > 1 is taught by generation g-1.")
    eval: EvalSpec = Field(default_factory=EvalSpec)
    _base_dir: str | None = PrivateAttr(None)  # the recipe file's folder; relative paths resolve against it

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct; got {seeds}")
        return seeds

    @property
    def base_dir(self) -> str | None:
        """The recipe file's folder (None for a recipe built in memory): relative paths and `py:` modules resolve
        there."""
        return self._base_dir

    def resolve_path(self, path: str) -> Path:
        """Relative paths in a recipe are relative to the recipe file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() or self._base_dir is None else Path(self._base_dir) / p

    def check(self, provided: Collection[str] = ()) -> Recipe:
        """Checks pydantic cannot do alone: loss names and parameters against the registry (`provided`: terms
        whose loss modules the Python API holds, which need no registered name)."""
        for i, term in enumerate(self.losses):
            if term.name not in provided:
                check_loss_term(term, where=f"recipe.losses[{i}]")
        names = [t.name for t in self.losses]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise RecipeError(f"recipe.losses: {duplicated} appear more than once; give each loss one term.")
        if not any(term.start_step == 0 for term in self.losses):
            raise RecipeError("recipe.losses: no term is active at step 0; give one term start_step: 0.")
        self._check_student_init()
        return self

    def _check_student_init(self) -> None:
        """`from_teacher` needs one teacher model to copy; `pretrain` needs a student built by a factory."""
        student, teacher = self.student, self.teacher
        teachers = [("recipe.teacher", teacher)]
        teachers += [(f"recipe.teacher.members[{i}]", m) for i, m in enumerate(teacher.members or [])]
        if student.pretrain is not None:
            teachers.append(("recipe.student.pretrain", student.pretrain))
        for where, spec in teachers:
            if spec.model == FROM_TEACHER:
                raise RecipeError(f"{where}.model: '{FROM_TEACHER}' builds the student from the teacher and is valid "
                                  "for recipe.student.model only; give this model its own factory.")
        if student.model == FROM_TEACHER:
            if student.pretrain is not None:
                raise RecipeError(
                    f"recipe.student.model: '{FROM_TEACHER}' (start from the teacher's layers) and "
                    "recipe.student.pretrain (start from a pre-trained compact model) are two alternative "
                    "initialisations; keep one of them."
                )
            if student.checkpoint is not None:
                raise RecipeError(f"recipe.student.checkpoint: a '{FROM_TEACHER}' student takes its weights from "
                                  "the teacher; remove 'checkpoint'.")
            kind = ("an ensemble ('members')" if teacher.members is not None
                    else "an online peer (mutual learning)" if teacher.online
                    else "a cache only" if teacher.model is None and teacher.path is None else None)
            if kind is not None:
                raise RecipeError(
                    f"recipe.student.model: '{FROM_TEACHER}' copies the layers of one teacher model, but "
                    f"recipe.teacher is {kind}; give the teacher a model (hf:, path:, or model + train), or "
                    "give the student its own model."
                )
        if student.pretrain is not None and (student.path is not None or student.checkpoint is not None):
            field = "path" if student.path is not None else "checkpoint"
            raise RecipeError(
                f"recipe.student.pretrain: the student's weights already come from '{field}'; pretrain initialises "
                f"a student built by 'model'. Remove one of them."
            )


def check_loss_term(term: LossTerm, where: str) -> None:
    """The name is registered and the parameters fit the loss's signature; builds it once to validate values."""
    cls = LOSSES.get(term.name, where=f"{where}.name")
    signature = inspect.signature(cls.__init__)
    accepted = [p for p in signature.parameters if p != "self"]
    for key in term.params:
        if key not in accepted:
            raise RecipeError(
                f"{where}: {cls.__name__} has no parameter {key!r}.{did_you_mean(key, accepted)} "
                f"Its parameters: {', '.join(accepted) or '(none)'}."
            )
    try:
        loss = cls(**term.params)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{where}: {exc}") from exc
    if term.progressive_steps is not None:
        _check_progressive(term, loss, where)


def _check_progressive(term: LossTerm, loss: Any, where: str) -> None:
    """`progressive_steps` needs layer pairs, and the term must live long enough for every pair's stage."""
    try:
        stages = loss.layer_stages()
    except ValueError as exc:
        raise RecipeError(f"{where}.progressive_steps: {exc}") from exc
    if not stages:
        raise RecipeError(
            f"{where}.progressive_steps: {type(loss).__name__} ({term.name!r}) has no layer pairs to train one at "
            "a time. Use it with a layer-paired loss (fitnet, pkd, hidden_cos, at, tinybert ...), or remove "
            "progressive_steps.")
    end = term.start_step + len(stages) * term.progressive_steps
    if term.stop_step is not None and term.stop_step < end:
        raise RecipeError(
            f"{where}.progressive_steps: {len(stages)} stages of {term.progressive_steps} steps from start_step "
            f"{term.start_step} end at step {end}, after stop_step {term.stop_step}, so the upper layers would "
            f"never get their stage. Set stop_step >= {end} or lower progressive_steps.")


def _format_location(loc: tuple[Any, ...]) -> str:
    out = "recipe"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _fields_at(loc: tuple[Any, ...], root: type[BaseModel]) -> list[str]:
    """Field names valid at a (parent) location of a `root` document, for did-you-mean on unknown keys."""
    model: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _yaml_trap_hint(value: Any) -> str:
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return " (YAML 1.1 reads numbers like 5e-4 as strings: write 5.0e-4.)"
    return ""


def recipe_error_from(exc: ValidationError, root: type[BaseModel] | None = None) -> RecipeError:
    """One line per problem, each naming the field and the fix (`root`: the document type, default Recipe)."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = _format_location(loc)
        if err["type"] == "extra_forbidden":
            valid = _fields_at(loc[:-1], root or Recipe)
            key = str(loc[-1])
            lines.append(f"{where}: unknown key {key!r}.{did_you_mean(key, valid)} Valid keys: {', '.join(valid)}.")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {msg}; got {err.get('input')!r}.{_yaml_trap_hint(err.get('input'))}")
    return RecipeError("\n".join(lines))


def set_by_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Apply an override `a.b.c=value` to nested dicts (list items by index: `losses.0.weight`)."""
    parts = dotted.split(".")
    node: Any = data
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def parse_override(text: str) -> tuple[str, Any]:
    """'train.lr=3e-3' -> ('train.lr', 0.003): the value is parsed as YAML, so lists and numbers work."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise RecipeError(f"--set {text!r}: write overrides as key.path=value, e.g. --set train.lr=0.003.")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise RecipeError(f"--set {text!r}: the value is not valid YAML ({exc}).") from exc
    if isinstance(value, str):  # '3e-3' is a string in YAML 1.1; an override means a number when it looks like one
        try:
            value = float(value)
        except ValueError:
            pass
    return key, value


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> None:
    """Apply `key.path=value` strings to a parsed recipe, in place."""
    for text in overrides or []:
        key, value = parse_override(text)
        try:
            set_by_path(data, key, value)
        except (IndexError, ValueError, TypeError, AttributeError) as exc:
            raise RecipeError(f"--set {text!r}: no such place in the recipe ({exc}).") from exc


def validate_document(root: type[Document], data: Any, overrides: list[str] | None = None) -> Document:
    """A parsed YAML document (a dict) validated as `root` (Recipe, TreeRecipe), `key.path=value` overrides
    applied first; every problem becomes a RecipeError line naming the field."""
    if not isinstance(data, dict):
        raise RecipeError(f"recipe: the top level must be a mapping of keys; got {type(data).__name__}.")
    apply_overrides(data, overrides)
    try:
        return root.model_validate(data)
    except ValidationError as exc:
        raise recipe_error_from(exc, root) from None


def recipe_from_dict(data: Any, base_dir: str | Path | None = None, overrides: list[str] | None = None,
                     provided: Collection[str] = ()) -> Recipe:
    """Validate a parsed recipe (a dict); overrides are `key.path=value` strings applied first (`provided`: see
    `Recipe.check`)."""
    recipe = validate_document(Recipe, data, overrides)
    if base_dir is not None:
        recipe._base_dir = str(Path(base_dir).resolve())
    return recipe.check(provided)


def read_yaml(path: str | Path, examples: str = "recipes/") -> Any:
    """`yaml.safe_load` of a recipe file, with errors that name the file, the line and the problem."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe: file {str(path)!r} does not exist. Check the path (see {examples} for examples).")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"recipe {str(path)!r}: malformed YAML{at}: {problem}. Fix the syntax there.") from None
    except UnicodeDecodeError as exc:
        raise RecipeError(f"recipe {str(path)!r}: not UTF-8 text ({exc.reason}).") from None


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read and validate a YAML recipe. Relative paths inside it resolve against its folder."""
    return recipe_from_dict(read_yaml(path), base_dir=Path(path).parent, overrides=overrides)


def dump_recipe(recipe: Recipe) -> str:
    """The fully resolved recipe as YAML (saved in each run folder)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
