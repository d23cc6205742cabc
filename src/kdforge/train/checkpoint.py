"""Checkpoints that resume exactly and are never half-written.

A checkpoint is a folder `checkpoints/step-NNNNNNNN/` holding the module weights (safetensors), the
optimizer and scheduler state (a torch file read back with `weights_only=True`), the RNG states and the
loop state (JSON), and a manifest with the SHA-256 of each file. It is written under a temporary name and
renamed into place; `checkpoints/latest` (itself written atomically) names the newest complete one.

Under FSDP (`save_sharded_checkpoint`) the module, optimizer and best weights go into `sharded/` instead,
written by every process with `torch.distributed.checkpoint` (each its own shards, no gather); the scheduler
state is `scheduler.pt`, the RNG states are every process's, and the manifest says `layout: fsdp` and the
number of processes, which a resumed run must match.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdforge import io
from kdforge.errors import KDForgeError, TrainingError
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


def _step_name(step: int) -> str:
    return f"step-{step:08d}"


def _start(folder: Path, step: int) -> Path:
    """The temporary folder of the checkpoint for `step`, with the leftovers of interrupted writes removed."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        io.remove_stale_temps(folder)
        tmp = folder / f".{_step_name(step)}{io.TEMP_SUFFIX}"
        tmp.mkdir()
        return tmp
    except OSError as exc:
        raise io.os_error(exc, folder) from None


def _finish(folder: Path, tmp: Path, step: int, manifest: dict[str, Any], keep: int) -> Path:
    """Checksum every file, rename the folder into place, point `latest` at it and keep the newest `keep`."""
    final = folder / _step_name(step)
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    manifest = {**manifest, "files": {str(p.relative_to(tmp)): io.sha256_file(p) for p in files}}
    io.write_json(tmp / "manifest.json", manifest)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    io.write_text(folder / "latest", final.name + "\n")
    for old in sorted(folder.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


@contextmanager
def _discarded_on_failure(folder: Path, tmp: Path, step: int) -> Iterator[None]:
    """A failed write (a full disk) leaves nothing and names the checkpoint; a kill leaves a `.tmp` no reader takes
    and the next `_start` removes."""
    try:
        yield
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise io.os_error(exc, folder / _step_name(step)) from None
        raise


def _manifest(step: int, **layout: Any) -> dict[str, Any]:
    """The manifest's head; `_finish` adds the checksums."""
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "step": step, **layout}


def save_checkpoint(folder: Path, module: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    state: LoopState, best_weights: dict[str, torch.Tensor] | None, keep: int = 1) -> Path:
    """Write a complete checkpoint for `state.step` and point `latest` at it; prune older ones.

    Leftovers of an interrupted write (`.step-*.tmp`, `.latest.*.tmp`) are removed first; no reader looks at them.
    """
    tmp = _start(folder, state.step)
    with _discarded_on_failure(folder, tmp, state.step):
        io.save_tensors(tmp / "module.safetensors", module.state_dict())
        if best_weights is not None:
            io.save_tensors(tmp / "best.safetensors", best_weights)
        io.write_torch(tmp / "optim.pt", {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})
        rng_tensors, rng_meta = _rng_state()
        io.save_tensors(tmp / "rng.safetensors", rng_tensors)
        io.write_json(tmp / "state.json", {"loop": asdict(state), "rng": rng_meta})
        return _finish(folder, tmp, state.step, _manifest(state.step), keep)


SHARDED_LAYOUT = "fsdp"


def _all_rng_states() -> dict[str, torch.Tensor]:
    """Every process's tensor RNG states, as `rank<r>/<name>` (collective: dropout draws differ per process)."""
    tensors, _ = _rng_state()
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, tensors)
    return {f"rank{rank}/{name}": value for rank, states in enumerate(gathered) for name, value in states.items()}


def save_sharded_checkpoint(folder: Path, module: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                            state: LoopState, best_weights: dict[str, torch.Tensor] | None, keep: int = 1) -> Path:
    """`save_checkpoint` for a module sharded with FSDP2; every process calls it. Each process writes its own
    shards of the module, the optimizer state and the best weights (`torch.distributed.checkpoint`); the main
    process writes the rest and renames the folder into place once all shards are written."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    main = io.is_writer()
    tmp = folder / f".{_step_name(state.step)}{io.TEMP_SUFFIX}"
    failed: list[Any] = [None]
    if main:
        try:
            tmp = _start(folder, state.step)
            (tmp / "sharded").mkdir()
        except Exception as exc:  # noqa: BLE001 - sent to every process below, then raised
            failed = [exc if isinstance(exc, KDForgeError) else TrainingError(f"checkpoint {str(folder)!r}: {exc}")]
    torch.distributed.broadcast_object_list(failed, src=0)  # also the barrier: the folder exists for every process
    if failed[0] is not None:
        raise failed[0]
    model_state, optim_state = get_state_dict(module, optimizer)
    payload: dict[str, Any] = {"model": model_state, "optim": optim_state}
    if best_weights is not None:
        payload["best"] = best_weights
    dcp.save(payload, checkpoint_id=tmp / "sharded")  # returns once every process's shards are written
    rng = _all_rng_states()
    if not main:
        return folder / _step_name(state.step)
    with _discarded_on_failure(folder, tmp, state.step):
        io.write_torch(tmp / "scheduler.pt", {"scheduler": scheduler.state_dict()})
        io.save_tensors(tmp / "rng.safetensors", rng)
        io.write_json(tmp / "state.json", {"loop": asdict(state), "rng": _rng_state()[1],
                                           "best": best_weights is not None})
        return _finish(folder, tmp, state.step, _manifest(
            state.step, layout=SHARDED_LAYOUT, world_size=torch.distributed.get_world_size()), keep)


def _check_layout(path: Path, manifest: dict[str, Any], sharded: bool) -> None:
    """A checkpoint is resumed the way it was written: sharded over as many processes, or whole."""
    layout, world = manifest.get("layout"), manifest.get("world_size")
    if sharded and layout != SHARDED_LAYOUT:
        raise TrainingError(f"checkpoint {str(path)!r} was written by a run without FSDP; resume it the same way "
                            "(without the FSDP accelerate config), or restart without --resume.")
    if not sharded and layout == SHARDED_LAYOUT:
        raise TrainingError(f"checkpoint {str(path)!r} holds FSDP shards of {world} processes; resume it under the "
                            "same FSDP launch, or restart without --resume.")
    if sharded and world != torch.distributed.get_world_size():
        raise TrainingError(f"checkpoint {str(path)!r} holds FSDP shards of {world} processes, this run has "
                            f"{torch.distributed.get_world_size()}; resume with {world} processes, or restart without "
                            "--resume.")


def load_sharded_checkpoint(path: Path, module: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                            ) -> tuple[LoopState, dict[str, torch.Tensor] | None]:
    """Restore a `save_sharded_checkpoint` into the sharded module and its optimizer; every process calls it and
    reads its own shards. Returns the loop state and the best weights (sharded like the module)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    _check_layout(path, verify_checkpoint(path), sharded=True)
    where = f"checkpoint {str(path)!r}"
    saved = json.loads((path / "state.json").read_text())
    model_state, optim_state = get_state_dict(module, optimizer)
    payload: dict[str, Any] = {"model": model_state, "optim": optim_state}
    if saved.get("best"):
        payload["best"] = {k: v.detach().clone() for k, v in module.state_dict().items()}
    dcp.load(payload, checkpoint_id=path / "sharded")
    set_state_dict(module, optimizer, model_state_dict=payload["model"], optim_state_dict=payload["optim"])
    try:
        optim = torch.load(path / "scheduler.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the weights-only unpickler refuses anything but plain data
        raise TrainingError(f"{where}: scheduler.pt holds something other than plain data, so it was not loaded "
                            f"({type(exc).__name__}). Restart the run without --resume.") from None
    scheduler.load_state_dict(optim["scheduler"])
    prefix = f"rank{torch.distributed.get_rank()}/"
    rng = io.load_weights_file(path / "rng.safetensors", where)
    _set_rng_state({k.removeprefix(prefix): v for k, v in rng.items() if k.startswith(prefix)}, saved["rng"])
    return LoopState(**saved["loop"]), payload.get("best")


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
    _check_layout(path, verify_checkpoint(path), sharded=False)
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
