"""Atomic file writing and safe weight loading: every file kdforge writes appears whole or not at all."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from io import BytesIO
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from kdforge.errors import KDForgeError

TEMP_SUFFIX = ".tmp"

_OS_ERRORS = {
    errno.ENOSPC: "no space left on the device. Free some space, or choose another {target}",
    errno.EROFS: "the file system is read-only. Choose a writable {target}",
    errno.EACCES: "permission denied. Choose a folder you can write to ({target}), or fix its permissions",
    errno.EPERM: "operation not permitted. Choose a folder you can write to ({target}), or fix its permissions",
    errno.EDQUOT: "disk quota exceeded. Free some space, or choose another {target}",
    errno.EIO: "input/output error (the disk or its connection failed). Check the device, or choose another "
               "{target}",
}
DISK_ERRNOS = frozenset(_OS_ERRORS)  # errors of the place written to, not of kdforge: one line, exit 2

# what the user can point elsewhere, as the running command calls it (`kdforge report` has no --out: it writes
# into the run folder)
_TARGET: ContextVar[str] = ContextVar("kdforge_output_target", default="--out")


@contextmanager
def output_target(name: str) -> Iterator[None]:
    """Within it, a failed write's message says to choose another `name` instead of another --out."""
    token = _TARGET.set(name)
    try:
        yield
    finally:
        _TARGET.reset(token)


def local_path(name: str, base_dir: str | Path | None) -> Path:
    """`name` as a local path: relative to the recipe's folder (`base_dir`) when it exists there (model folders,
    tokenizers and data files named in a recipe; a hub name comes back as it is and does not exist)."""
    local = Path(name).expanduser()
    if not local.is_absolute() and base_dir is not None and (Path(base_dir) / local).exists():
        return Path(base_dir) / local
    return local


def os_error(exc: OSError, path: str | Path, doing: str = "write") -> KDForgeError:
    """A one-line KDForgeError for a failed write, saying what to do (disk full, read-only, permissions)."""
    template = _OS_ERRORS.get(exc.errno or -1)
    reason = template.format(target=_TARGET.get()) if template else f"{exc.strerror or exc}"
    return KDForgeError(f"cannot {doing} {str(path)!r}: {reason}.")


def safetensors_os_error(exc: Exception) -> OSError | None:
    """The OSError inside a safetensors write failure (its Rust writer reports `... (os error 28)` in a
    `SafetensorError`, not as an OSError), or None when the failure is not the file system's."""
    match = re.search(r"os error (\d+)", str(exc))
    if match is None:
        return None
    code = int(match.group(1))
    return OSError(code, os.strerror(code))


def _umask() -> int:
    """The process umask (read without changing it where /proc allows; else set and restored at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def is_writer() -> bool:
    """Whether this process writes files: always, except the non-main processes of a distributed run.

    Under `torchrun`/`accelerate launch` every process runs the same code; only rank 0 touches the run folder,
    so reports, checkpoints and models are written once, whole, and never by two processes at a time.
    """
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the same folder; on success it is renamed onto `path` (atomic on POSIX).

    An interrupted write leaves at most a hidden `.NAME.*.tmp`, which no reader takes for the real file
    (`remove_stale_temps` clears them); a failed one leaves nothing. Disk-full, I/O, read-only and permission
    errors become `KDForgeError`. The file gets the mode the umask gives new files (not mkstemp's 0600).
    In the non-main processes of a distributed run the result is discarded (see `is_writer`).
    """
    path = Path(path)
    tmp = None
    writer = is_writer()
    try:
        if writer:
            path.parent.mkdir(parents=True, exist_ok=True)
        # a process that does not write works in the system's temp folder, leaving the run folder alone
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent if writer else None)
        os.close(fd)
        yield Path(tmp)
        if writer:
            # mkstemp creates 0600 (and a library's own writer may replace the file with another 0600 temp): an
            # output gets the mode any new file gets, 0666 less the umask
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
    except OSError as exc:
        if exc.errno in _OS_ERRORS:
            raise os_error(exc, path) from None
        raise
    except Exception as exc:  # safetensors' writer: SafetensorError("... (os error 28)")
        inner = safetensors_os_error(exc)
        if inner is not None and inner.errno in _OS_ERRORS:
            raise os_error(inner, path) from None
        raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temps(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Delete the temporary files and folders an interrupted write left in `folder` (and below, if recursive).

    Only call it where no write is in progress: at the start of a run, or in a folder this process alone writes.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir() or not is_writer():
        return removed
    # ours are `.NAME.*.tmp`; safetensors writes through a `.tmpXXXXXX` of its own (Rust's tempfile crate) and
    # leaves that behind when killed mid-write
    patterns = (f".*{TEMP_SUFFIX}", ".tmp??????")
    found = {p for pattern in patterns for p in (folder.rglob(pattern) if recursive else folder.glob(pattern))}
    for stale in sorted(found):
        if any(parent in removed for parent in stale.parents):
            continue
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed


def empty_dir(folder: Path, overwrite: bool, what: str = "output dir") -> None:
    """Create `folder` for a command's outputs; a non-empty one is replaced only with --overwrite, so earlier
    results are never mixed with new ones or lost by accident."""
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise KDForgeError(f"{what} {str(folder)!r} exists and is not empty. Pass --overwrite to replace it, "
                               "or choose another --out.")
        shutil.rmtree(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, folder) from None


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_torch(path: str | Path, obj: Any) -> None:
    """`torch.save` through Python's file writing: torch's own writer reports a full disk as a RuntimeError
    ("file write failed") instead of the OSError that says what happened."""
    buffer = BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def write_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Run `writer(tmp_path)` and rename the result into place (for savefig, torch.save, ...)."""
    with atomic_path(path) as tmp:
        writer(tmp)


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    # safetensors refuses shared or non-contiguous storage: store independent contiguous copies
    clean = {k: v.detach().contiguous().clone().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp), metadata=metadata)


def read_json_object(path: str | Path, what: str, fix: str) -> dict[str, Any]:
    """A JSON object read from a file the project wrote (model.json, preprocess.json): never evaluated; an
    unreadable or non-object file is one error naming the file, `what` it should be and the `fix`."""
    try:
        record = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise KDForgeError(f"{str(path)!r} is not valid JSON; {fix}.") from None
    if not isinstance(record, dict):
        raise KDForgeError(f"{str(path)!r} is not {what} (not a JSON object); {fix}.")
    return record


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def first_line(exc: BaseException) -> str:
    """The first line of an error's text, for a one-line message (never PyTorch's unsafe-load advice)."""
    line = (str(exc).splitlines() or [""])[0]
    return "" if "weights_only" in line else line


def load_weights_file(path: str | Path, where: str) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from a torch file with `weights_only=True` (no pickle code runs)."""
    path = Path(path)
    if not path.is_file():
        raise KDForgeError(f"{where}: weights file {str(path)!r} does not exist. Check the path.")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message advises weights_only=False: never pass that on
        raise KDForgeError(
            f"{where}: {str(path)!r} holds Python objects besides tensors; kdforge reads torch files with "
            "weights_only=True and never unpickles objects (they can run code). Save the weights as .safetensors, "
            "or as a torch file of tensors only."
        ) from None
    except Exception as exc:  # noqa: BLE001 - any decoding failure means the file is unusable
        raise KDForgeError(
            f"{where}: cannot read weights from {str(path)!r} ({type(exc).__name__}: {first_line(exc)}). "
            "kdforge reads .safetensors, or torch files that hold only tensors."
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise KDForgeError(f"{where}: {str(path)!r} does not hold a state dict of tensors.")
    return state
