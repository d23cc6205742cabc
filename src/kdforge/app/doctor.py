"""`kdforge doctor RECIPE`: do the teacher's and the student's tokenizers and chat templates allow the recipe's
distillation? Also run before training (`kdforge.app.preflight.check_lm_recipe`): errors refuse, warnings log.

Where each side's tokenizer comes from: `teacher.tokenizer` / `student.tokenizer` (hf:<folder>) when given, else
the model's own `hf:` / `hf_student:` folder when it holds tokenizer files, else the data's tokenizer
(`data.args.tokenizer`, which made the ids both models read). Embedding rows come from the folder's config.json
(`vocab_size`) or a factory's `args.vocab_size`.

The findings (`kdforge.lm.tokenizers` does the comparing):

* the case: identical tokenizers; padded vocabulary (one tokenizer, embeddings of different sizes: `vocab_size`
  on token_kd); superset (the student's tokens keep their ids in the teacher's larger vocabulary); foreign
  (sequence-level KD or a cross-tokenizer loss);
* a model whose tokenizer is not the one the data was tokenized with (every model reads the data's ids);
* a chat template that writes BOS/EOS while the tokenizer adds them again when the rendered text is encoded;
* teacher and student chat templates that render a conversation differently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kdforge.errors import RecipeError
from kdforge.lm.tokenizers import (
    VocabComparison,
    duplicated_specials,
    has_tokenizer_files,
    load_lm_tokenizer,
    local_path,
    template_difference,
    vocabulary_case,
)
from kdforge.recipe import ModelSpec, Recipe

Level = Literal["info", "warning", "error"]

# Terms that compare the two models' logits entry by entry, so they need one vocabulary (or its shared prefix).
LOGIT_TERMS = ("kd", "dkd", "gkd", "token_kd", "fused_token_kd", "logit_mse")
# Terms that take vocab_size (the real, shared part of padded or nested vocabularies)
VOCAB_SIZE_TERMS = ("token_kd", "fused_token_kd")
# Terms that distil across tokenizers (docs/llm.md#distilling-across-tokenizers).
CROSS_TOKENIZER_TERMS = ("uld", "span_kl", "span_hybrid")
ACROSS = ("sequence-level KD (kdforge.llm.seq_kd: train the student with ce on teacher-generated text) or a "
          "cross-tokenizer loss (uld, span_kl or span_hybrid; docs/llm.md#distilling-across-tokenizers)")
LM_SOURCES = ("text:lm_file",)


@dataclass(frozen=True)
class Finding:
    level: Level
    message: str


@dataclass
class Diagnosis:
    """What `kdforge doctor` found; `problems` (warnings and errors) make it exit 2."""

    findings: list[Finding] = field(default_factory=list)

    def add(self, level: Level, message: str) -> None:
        self.findings.append(Finding(level, message))

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.level != "info"]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]


@dataclass
class Side:
    """One model's tokenizer, where it came from (for messages) and its embedding rows (None: unknown)."""

    name: str
    tokenizer: Any
    origin: str
    rows: int | None


def is_lm_recipe(recipe: Recipe) -> bool:
    """Whether the tokenizer checks apply: a language-model data source, or a model that names its tokenizer."""
    return recipe.data.source in LM_SOURCES or any(
        spec.tokenizer is not None for spec in (recipe.teacher, recipe.student))


def diagnose(recipe: Recipe, data_tokenizer: Any = None) -> Diagnosis:
    """Compare the recipe's teacher and student tokenizers and templates (see the module docstring).
    `data_tokenizer`: the loaded data's tokenizer (a run has it; otherwise it is loaded, or trained for 'bpe')."""
    result = Diagnosis()
    data_spec = recipe.data.args.get("tokenizer") if recipe.data.source in LM_SOURCES else None
    data_tok = data_tokenizer if data_tokenizer is not None else _data_tokenizer(recipe, data_spec)
    teacher = _side(recipe, "teacher", recipe.teacher, data_tok, data_spec)
    student = _side(recipe, "student", recipe.student, data_tok, data_spec)
    if teacher is None or student is None:
        result.add("info", "no tokenizer to compare: the data is not a language-model source (text:lm_file) and "
                           "neither teacher.tokenizer nor student.tokenizer is given.")
        return result
    names = [term.name for term in recipe.losses]
    logit_terms = [(i, term) for i, term in enumerate(recipe.losses) if term.name in LOGIT_TERMS]
    across = any(name in CROSS_TOKENIZER_TERMS for name in names)
    # compared once (each comparison reads both whole vocabularies) and passed to every check that needs it
    match = vocabulary_case(teacher.tokenizer, student.tokenizer)
    if data_tok is not None and not across:  # a cross-tokenizer loss gives each model its own tokens
        _data_ids(result, teacher, student, match, data_tok, data_spec)
    _vocabulary(result, teacher, student, match, logit_terms, across)
    difference = template_difference(teacher.tokenizer, student.tokenizer)
    if difference is not None:
        result.add("warning", f"recipe.student.tokenizer: teacher ({teacher.origin}) and student ({student.origin}) "
                              f"chat templates differ: {difference}. The student learns the data's format and will "
                              "be prompted with its own template; save the student with the template the data is "
                              "rendered with (student.tokenizer: the same folder, or copy chat_template.jinja).")
    # one tokenizer loaded twice (model folder, data) is reported once
    twins = student.tokenizer is teacher.tokenizer or (
        match.case == "identical"
        and getattr(teacher.tokenizer, "chat_template", None) == getattr(student.tokenizer, "chat_template", None))
    for side in (teacher,) if twins else (teacher, student):
        for token in duplicated_specials(side.tokenizer):
            result.add("warning", f"recipe.{side.name}.tokenizer: {side.origin}'s chat template writes the {token} "
                                  f"token and the tokenizer adds another when the rendered text is encoded with "
                                  f"tokenizer(text), giving a doubled {token}. kdforge's rows hold one (rendered "
                                  "chats are encoded with add_special_tokens=False); elsewhere encode them the "
                                  f"same way, or drop the {token} from the template.")
    return result


def _data_ids(result: Diagnosis, teacher: Side, student: Side, match: VocabComparison, data_tok: Any,
              data_spec: str | None) -> None:
    """Every model is fed the data's ids, so each must read every id as the data's tokenizer does. A student
    whose map is the teacher's (`match` identical) gives the teacher's comparison again: it is reused."""
    differing: dict[str, int] = {}
    for side in (teacher, student):
        if side.tokenizer is data_tok:
            continue
        if side is student and match.case == "identical" and "teacher" in differing:
            differing["student"] = differing["teacher"]
        else:
            differing[side.name] = vocabulary_case(side.tokenizer, data_tok).differing
        if differing[side.name]:  # the model must read every id of the data as the same token
            result.add("error", f"recipe.{side.name}.tokenizer: the data is tokenized with {data_spec or 'bpe'} but "
                                f"the {side.name} reads {side.origin} ({differing[side.name]} tokens differ), and "
                                f"every model is fed the data's ids; set data.args.tokenizer to {side.origin}.")


def _vocabulary(result: Diagnosis, teacher: Side, student: Side, match: VocabComparison,
                logit_terms: list[tuple[int, Any]], across: bool) -> None:
    """The vocabulary case (`match`), and whether the logit-comparing loss terms can work with it."""
    unset = [(i, term) for i, term in logit_terms if term.params.get("vocab_size") is None]
    t_rows, s_rows = teacher.rows, student.rows
    if match.case == "identical" and t_rows is not None and s_rows is not None and t_rows != s_rows:
        real = len(teacher.tokenizer)
        case, size = (f"padded vocabulary: one tokenizer of {real} tokens, teacher {t_rows} and student {s_rows} "
                      "embedding rows"), min(real, t_rows, s_rows)
    elif match.case == "prefix":
        case, size = (f"superset vocabulary: the student's {match.student_size} tokens are the teacher's first "
                      f"{match.student_size} (of {match.teacher_size})"), match.student_size
    elif match.case == "identical":
        result.add("info", f"identical tokenizers ({match.teacher_size} tokens): token-level KD applies as is.")
        return
    else:
        case = None
    if case is not None:
        for i, term in unset:
            fix = (f"set vocab_size: {size} on the term so only the shared tokens are compared"
                   if term.name in VOCAB_SIZE_TERMS else f"use token_kd with vocab_size: {size} instead")
            result.add("error", f"recipe.losses[{i}] ({term.name}): {case}; {fix}.")
        if not unset:
            result.add("info", f"{case}; vocab_size on the loss compares the shared tokens.")
        return
    kind = ("superset vocabulary: the student's tokens keep their ids in the teacher's, but are not its first ones"
            if match.case == "superset" else
            f"foreign vocabulary: {match.differing} of the student's {match.student_size} tokens are missing from "
            f"the teacher's {match.teacher_size} or have other ids")
    if across and not logit_terms:
        result.add("info", f"{kind}; the cross-tokenizer loss handles it.")
        return
    where = f"recipe.losses[{logit_terms[0][0]}] ({logit_terms[0][1].name})" if logit_terms else "recipe.losses"
    result.add("error", f"{where}: {kind}, so token-level losses cannot compare the two models' logits; use "
                        f"{ACROSS}.")


def _data_tokenizer(recipe: Recipe, spec: str | None) -> Any:
    """The tokenizer the data source uses (an in-process 'bpe' one is trained by loading the data)."""
    if recipe.data.source not in LM_SOURCES:
        return None
    if isinstance(spec, str) and spec.startswith("hf:"):
        return load_lm_tokenizer(spec, recipe.base_dir, "recipe.data.args.tokenizer")
    from kdforge.app.data import load_recipe_data

    return load_recipe_data(recipe.data, recipe.base_dir).tokenizer.backend


def _side(recipe: Recipe, name: str, spec: ModelSpec, data_tok: Any, data_spec: str | None) -> Side | None:
    folder = _model_folder(spec, recipe.base_dir)
    rows = _embedding_rows(spec, folder)
    if spec.tokenizer is not None:
        where = f"recipe.{name}.tokenizer"
        return Side(name, load_lm_tokenizer(spec.tokenizer, recipe.base_dir, where), spec.tokenizer, rows)
    if folder is not None and has_tokenizer_files(folder):
        origin = f"hf:{(spec.model or '').split(':', 1)[1]}"  # hf_student:<folder> reads the folder's tokenizer
        return Side(name, load_lm_tokenizer(f"hf:{folder}", None, f"recipe.{name}.model"), origin, rows)
    if data_tok is not None:
        return Side(name, data_tok, f"the data's tokenizer ({data_spec or 'bpe'})", rows)
    return None


def _model_folder(spec: ModelSpec, base_dir: str | None) -> Path | None:
    model = spec.model or ""
    for prefix in ("hf:", "hf_student:"):
        if model.startswith(prefix):
            folder = local_path(model.removeprefix(prefix), base_dir)
            return folder if folder.is_dir() else None
    return None


def _embedding_rows(spec: ModelSpec, folder: Path | None) -> int | None:
    """The model's output rows without building it: config.json's vocab_size, or the factory's args.vocab_size."""
    if folder is not None and (folder / "config.json").is_file():
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None
        rows = config.get("vocab_size", config.get("text_config", {}).get("vocab_size"))
        return int(rows) if isinstance(rows, int) else None
    rows = spec.args.get("vocab_size")
    return rows if isinstance(rows, int) else None


def check_recipe(recipe: Recipe, data_tokenizer: Any = None, log: Any = None) -> Diagnosis:
    """The checks as a run needs them: errors raise one RecipeError (one line each), warnings go to `log`."""
    result = diagnose(recipe, data_tokenizer)
    if result.errors:
        raise RecipeError("; ".join(f.message for f in result.errors))
    if log is not None:
        for finding in result.problems:
            log.warning("%s", finding.message)
    return result


__all__ = ["CROSS_TOKENIZER_TERMS", "LOGIT_TERMS", "Diagnosis", "Finding", "check_recipe", "diagnose",
           "is_lm_recipe"]
