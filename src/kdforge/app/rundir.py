"""The run folder: its marker, what each stage leaves in it, and the types that describe a finished run.

Every stage writes into the run folder and is skipped when `--resume` finds it complete; these helpers are the
only code that knows the folder's file names, so the report, export and `kdforge eval` read what the run wrote.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import sys
from dataclasses import dataclass, field
from importlib.metadata import version as _installed_version
from pathlib import Path
from typing import Any

import numpy
import torch
import yaml
from torch import nn

from kdforge import io
from kdforge.errors import KDForgeError
from kdforge.processes import process_state
from kdforge.recipe import Recipe, dump_recipe
from kdforge.train.loop import TrainSummary
from kdforge.version import __version__

RUN_MARKER = "recipe.resolved.yaml"
TEACHER_PARTS = ("teacher", "data")  # the recipe sections the teacher stage depends on
# a re-run whose recipe changed only outside TEACHER_PARTS keeps these (the marker is rewritten)
KEPT_ON_TEACHER_REUSE = {"teacher", RUN_MARKER, "environment.json"}
logger = logging.getLogger("kdforge")


@dataclass
class ModelResult:
    """A trained model, where it was saved, and its test metrics."""

    model: nn.Module
    folder: Path
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    """What a run made: its folder, the report (the content of report.json), the teacher and every student."""

    out_dir: Path
    report: dict[str, Any]
    teacher: nn.Module
    students: dict[int, ModelResult]
    scratch: dict[int, ModelResult]

    def save(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Copy the run folder to `directory` (the same files `kdforge distill --out` writes)."""
        target = Path(directory)
        if target.resolve() == self.out_dir.resolve():
            return target
        if target.exists():
            if not overwrite:
                raise KDForgeError(f"save: {str(target)!r} exists. Choose another folder, or pass overwrite=True.")
            shutil.rmtree(target)
        tmp = target.with_name(target.name + io.TEMP_SUFFIX)
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            shutil.copytree(self.out_dir, tmp)
            tmp.rename(target)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise io.os_error(exc, target) from None
        return target


def prepare_run_dir(out_dir: Path, recipe: Recipe, resume: bool, overwrite: bool) -> None:
    """Refuse to mix runs: an existing run folder needs --resume (same recipe) or --overwrite.

    With several processes (torchrun, accelerate launch) every process checks the folder as it was, then only
    the main process changes it; an error there reaches every process, so none waits for the others forever.
    """
    state = process_state()
    reuse_teacher = _check_run_dir(out_dir, recipe, resume, overwrite)
    state.wait_for_everyone()
    message = [None]
    if state.is_main_process:
        try:
            if reuse_teacher:
                _clear_after_teacher(out_dir)
            _make_run_dir(out_dir, recipe, overwrite)
        except KDForgeError as exc:
            message[0] = str(exc)
    if state.num_processes > 1:
        torch.distributed.broadcast_object_list(message, src=0)
    if message[0] is not None:
        raise KDForgeError(message[0])


def _same_teacher_parts(saved: str, recipe: Recipe) -> bool:
    """Whether the saved recipe and this one agree on everything the teacher stage depends on."""
    try:
        before = yaml.safe_load(saved)
    except yaml.YAMLError:
        return False
    now = yaml.safe_load(dump_recipe(recipe))
    return isinstance(before, dict) and all(before.get(part) == now.get(part) for part in TEACHER_PARTS)


def _clear_after_teacher(out_dir: Path) -> None:
    """Remove what the stages after the teacher wrote (students, pre-training, the report): they belong to the
    recipe as it was. The teacher's folder stays."""
    try:
        for entry in out_dir.iterdir():
            if entry.name in KEPT_ON_TEACHER_REUSE:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    except OSError as exc:
        raise io.os_error(exc, out_dir) from None


def _make_run_dir(out_dir: Path, recipe: Recipe, overwrite: bool) -> None:
    try:
        if overwrite and out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        io.remove_stale_temps(out_dir, recursive=True)  # what a killed run left half-written
        io.write_text(out_dir / RUN_MARKER, dump_recipe(recipe))
    except OSError as exc:
        raise io.os_error(exc, out_dir) from None


def _check_run_dir(out_dir: Path, recipe: Recipe, resume: bool, overwrite: bool) -> bool:
    """Refuse what would mix runs; True when --resume continues a run whose recipe changed only after the teacher
    (its finished teacher is kept, every later stage is trained again)."""
    marker = out_dir / RUN_MARKER
    if marker.is_file():
        if overwrite:
            return False
        saved = marker.read_text()
        same_teacher = _same_teacher_parts(saved, recipe)
        if resume:
            if saved == dump_recipe(recipe):
                return False
            if same_teacher:
                logger.warning("%s: the recipe changed after the teacher (its teacher and data are the same); "
                               "reusing the teacher there and training every later stage again.", out_dir)
                return True
            raise KDForgeError(
                f"--resume: {str(out_dir)!r} holds a run of a different recipe (its {' or '.join(TEACHER_PARTS)} "
                "sections differ). Resume with the same recipe and overrides, or choose another --out."
            )
        reuse = (" (its teacher is reused: the recipe's teacher and data sections are unchanged)"
                 if same_teacher and saved != dump_recipe(recipe) else "")
        raise KDForgeError(
            f"output dir {str(out_dir)!r} already holds a run. Pass --resume to continue it{reuse}, "
            "--overwrite to replace it, or choose another --out."
        )
    elif out_dir.exists() and not out_dir.is_dir():
        raise KDForgeError(f"output dir {str(out_dir)!r} is a file, not a folder. Choose another --out.")
    elif out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise KDForgeError(
            f"output dir {str(out_dir)!r} exists and is not empty (and is not a kdforge run). "
            "Choose another --out, or pass --overwrite to replace it."
        )


def environment() -> dict[str, Any]:
    """Versions and machine facts the report prints, so a reader knows what produced the numbers."""
    return {
        "kdforge": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
        "torch": torch.__version__, "accelerate": _installed_version("accelerate"), "numpy": numpy.__version__,
        "scikit-learn": _installed_version("scikit-learn"), "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(), "world_size": process_state().num_processes,
    }


def save_summary(summary: TrainSummary, folder: Path) -> None:
    """train_summary.json (steps, best step, early stop, time) and, when the best evaluation was kept, the
    last step's student as last.safetensors, so the report can show best-epoch and last-epoch figures."""
    io.write_json(folder / "train_summary.json", {
        "steps": summary.steps, "best_step": summary.best_step, "stopped_early": summary.stopped_early,
        "seconds": summary.seconds, "nonfinite_skipped": summary.nonfinite_skipped,
    })
    if summary.last_weights is not None:
        student = {k.removeprefix("student."): v for k, v in summary.last_weights.items() if k.startswith("student.")}
        io.save_tensors(folder / "last.safetensors", student)


def train_summary(folder: Path) -> dict[str, Any]:
    """Steps, best step and training seconds from a stage's train_summary.json ({} when it has none)."""
    summary_file = folder / "train_summary.json"
    if not summary_file.is_file():
        return {}
    summary = json.loads(summary_file.read_text())
    return {"steps": summary["steps"], "best_step": summary["best_step"], "train_seconds": summary["seconds"]}


def load_log(path: Path) -> list[dict[str, Any]]:
    """The records of a stage's log.jsonl ([] when it has none)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def save_tokenizer(tokenizer: Any, out: Path, log) -> None:
    """`<run>/tokenizer.json`: the tokenizer a text source made the ids with (an in-process WordPiece included),
    so the saved student can read new text exactly as it was trained."""
    text = tokenizer.to_json() if tokenizer is not None else None
    if text is None:
        if tokenizer is not None:
            log.info("the tokenizer is a slow (Python) tokenizer; tokenizer.json is not written")
        return
    if io.is_writer():
        io.write_text(out / "tokenizer.json", text)
