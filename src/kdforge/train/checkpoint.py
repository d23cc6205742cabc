"""Checkpoints that resume exactly and are never half-written.

A checkpoint is a folder `checkpoints/step-NNNNNNNN/` holding the module weights (safetensors), the
optimizer and scheduler state (a torch file read back with `weights_only=True`), the RNG states and the
loop state (JSON), and a manifest with the SHA-256 of each file. It is written under a temporary name and
renamed into place; `checkpoints/latest` (itself written atomically) names the newest complete one.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdforge import io
from kdforge.errors import TrainingError
from kdforge.models import load_state_into

CHECKPOINT_FORMAT = "kdforge-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class LoopState:
    """Everything about the loop's progress that a resumed run must restore."""

    step: int = 0
    best_value: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0
    evals: list[dict[str, float]] = field(default_factory=list)
    nonfinite_skipped: int = 0  # optimizer steps skipped for a NaN/inf loss (train.nonfinite: skip)
    log_bytes: int | None = None  # length of log.jsonl at this step: a resumed run cuts the log there


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = state
    np_state = np.random.get_state()
    py_state = random.getstate()
    meta = {
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    return tensors, meta


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda"))]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    kind, keys, *rest = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(folder: Path, module: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    state: LoopState, best_weights: dict[str, torch.Tensor] | None, keep: int = 1) -> Path:
    """Write a complete checkpoint for `state.step` and point `latest` at it; prune older ones.

    Leftovers of an interrupted write (`.step-*.tmp`, `.latest.*.tmp`) are removed first; no reader looks at them.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        io.remove_stale_temps(folder)
        tmp = folder / f".step-{state.step:08d}{io.TEMP_SUFFIX}"
        tmp.mkdir()
    except OSError as exc:
        raise io.os_error(exc, folder) from None
    final = folder / f"step-{state.step:08d}"
    try:
        io.save_tensors(tmp / "module.safetensors", module.state_dict())
        if best_weights is not None:
            io.save_tensors(tmp / "best.safetensors", best_weights)
        io.write_torch(tmp / "optim.pt", {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})
        rng_tensors, rng_meta = _rng_state()
        io.save_tensors(tmp / "rng.safetensors", rng_tensors)
        io.write_json(tmp / "state.json", {"loop": asdict(state), "rng": rng_meta})
        manifest = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "step": state.step,
            "files": {p.name: io.sha256_file(p) for p in sorted(tmp.iterdir())},
        }
        io.write_json(tmp / "manifest.json", manifest)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    except Exception as exc:  # a failed write (a full disk) leaves nothing; a kill leaves a `.tmp` no reader takes
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise io.os_error(exc, final) from None
        raise
    io.write_text(folder / "latest", final.name + "\n")
    for old in sorted(folder.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(folder: Path) -> Path | None:
    pointer = folder / "latest"
    if not pointer.is_file():
        return None
    return folder / pointer.read_text().strip()


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """The manifest, after checking format, version and every file's checksum."""
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise TrainingError(f"checkpoint {str(path)!r} has no manifest.json; it is incomplete or not kdforge's.")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError:
        raise TrainingError(f"checkpoint {str(path)!r}: manifest.json is corrupted.") from None
    if manifest.get("format") != CHECKPOINT_FORMAT or manifest.get("version") != CHECKPOINT_VERSION:
        raise TrainingError(
            f"checkpoint {str(path)!r} has format {manifest.get('format')!r} v{manifest.get('version')}; "
            f"this kdforge reads {CHECKPOINT_FORMAT!r} v{CHECKPOINT_VERSION}. Start the run again without --resume."
        )
    for name, digest in manifest["files"].items():
        file = path / name
        if not file.is_file() or io.sha256_file(file) != digest:
            raise TrainingError(
                f"checkpoint {str(path)!r}: {name} is missing or corrupted (checksum mismatch). "
                "Delete the checkpoint folder to fall back to an earlier one, or restart without --resume."
            )
    return manifest


def load_checkpoint(path: Path, module: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any) -> tuple[LoopState, dict[str, torch.Tensor] | None]:
    """Restore module, optimizer, scheduler and RNG states; returns the loop state and best weights."""
    verify_checkpoint(path)
    where = f"checkpoint {str(path)!r}"
    load_state_into(module, io.load_weights_file(path / "module.safetensors", where), where)
    try:
        optim = torch.load(path / "optim.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the weights-only unpickler refuses anything but plain data
        raise TrainingError(
            f"{where}: optim.pt holds something other than plain tensors and numbers, so it was not loaded "
            f"({type(exc).__name__}). Restart the run without --resume."
        ) from None
    optimizer.load_state_dict(optim["optimizer"])
    scheduler.load_state_dict(optim["scheduler"])
    saved = json.loads((path / "state.json").read_text())
    _set_rng_state(io.load_weights_file(path / "rng.safetensors", where), saved["rng"])
    best_path = path / "best.safetensors"
    best = io.load_weights_file(best_path, where) if best_path.is_file() else None
    return LoopState(**saved["loop"]), best
