"""The training loop: one explicit Accelerate loop for teachers, students and baselines alike.

What differs between those is data, not code: the module (student + loss terms, or a mutual-learning pair),
the teacher side (online, cached, or none for plain training), the step function and the term schedule
(which terms count at a step). Checkpoints make it resumable exactly; they are written by time and by events
(every `checkpoint_minutes`, every `checkpoint_every` steps when set, at the end, before an early stop and on
SIGTERM/SIGINT), not per epoch, so a run of many short epochs does not spend its time writing them.

Launched with an FSDP config, the same loop shards the module and an online teacher with FSDP2 (`train.sharding`),
writes sharded checkpoints, and gives the modules back whole at the end; otherwise Accelerate replicates them (DDP).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor, nn

from kdforge import io
from kdforge.data.tensors import iterate_batches, num_batches
from kdforge.errors import TrainingError
from kdforge.losses.protocols import StepFn, TeacherSource
from kdforge.train import sharding
from kdforge.train.checkpoint import (
    LoopState,
    latest_checkpoint,
    load_checkpoint,
    load_sharded_checkpoint,
    save_checkpoint,
    save_sharded_checkpoint,
)
from kdforge.train.config import LoopConfig
from kdforge.train.divergence import last_finite_checkpoint
from kdforge.train.module import OnlineTeacher, counted_entries, standard_step
from kdforge.train.optim import make_optimizer, make_scheduler
from kdforge.train.schedule import TermSchedule
from kdforge.types import Batch, TensorData

if TYPE_CHECKING:  # the caller brings the Accelerator; importing the loop need not load accelerate
    from accelerate import Accelerator

logger = logging.getLogger("kdforge")


@dataclass
class TrainJob:
    """One model to train: what, on which data, for how many optimizer steps, and where its files go.

    `module` is a DistillModule or MutualModule (a `student`, a `loss`). `schedule` says which loss terms count
    at each step (None: every term at every step). `where` names the settings in messages (the application
    passes e.g. "recipe.train").
    """

    name: str
    module: nn.Module
    teacher: TeacherSource | None
    data: TensorData
    config: LoopConfig
    total_steps: int
    out_dir: Path
    validate: Callable[[nn.Module], dict[str, float]] | None = None
    step_fn: StepFn = standard_step
    schedule: TermSchedule | None = None
    where: str = "train"


@dataclass
class TrainSummary:
    steps: int
    best_step: int | None
    stopped_early: bool
    evals: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    last_weights: dict[str, Tensor] | None = None  # the module at the last step, when `select: best` replaced it
    nonfinite_skipped: int = 0  # steps skipped for a NaN/inf loss (train.nonfinite: skip)


def steps_for(cfg: LoopConfig, n_samples: int) -> int:
    """Optimizer steps a config asks for on `n_samples` training samples."""
    if cfg.max_steps is not None:
        return cfg.max_steps
    return cfg.epochs * max(1, math.ceil(num_batches(n_samples, cfg.batch_size) / cfg.grad_accum))


def _to_device(batch: Batch, device: torch.device) -> Batch:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


class _Log:
    """Append-only JSONL log, kept consistent with the checkpoint a resumed run starts from: the checkpoint
    records the log's length in bytes, and a resumed run cuts the file there (lines of lost steps go) and
    appends; nothing is re-serialised."""

    def __init__(self, path: Path, state: LoopState, enabled: bool) -> None:
        self.enabled = enabled
        self.path = path
        if not enabled:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if state.step > 0 and path.is_file():
                if state.log_bytes is not None and path.stat().st_size >= state.log_bytes:
                    os.truncate(path, state.log_bytes)
                else:  # a checkpoint from before log_bytes was recorded: keep the lines up to its step
                    kept = [line for line in path.read_text().splitlines()
                            if line.strip() and json.loads(line).get("step", 0) <= state.step]
                    io.write_text(path, "".join(line + "\n" for line in kept))
                self.handle = path.open("a", encoding="utf-8")
            else:
                self.handle = path.open("w", encoding="utf-8")
        except OSError as exc:
            raise io.os_error(exc, path) from None

    def write(self, record: dict) -> None:
        if self.enabled:
            try:
                self.handle.write(json.dumps(record) + "\n")
            except OSError as exc:
                raise io.os_error(exc, self.path) from None

    def flush(self) -> int | None:
        """Before a checkpoint: a killed run must not resume from a step whose log lines were still buffered.
        Returns the log's length in bytes (None when this process does not log)."""
        if self.enabled:
            try:
                self.handle.flush()
                return self.handle.tell()
            except OSError as exc:
                raise io.os_error(exc, self.path) from None
        return None

    def close(self) -> None:
        if self.enabled:
            try:
                self.handle.close()
            except OSError as exc:  # the last buffered lines meet a full disk
                raise io.os_error(exc, self.path) from None


_clock = time.monotonic  # the checkpoint interval's clock (a test replaces it)


class _Interrupts:
    """SIGTERM/SIGINT during `fit`: the step in flight finishes, a checkpoint is written, then the signal is
    delivered again as it would have been (SIGINT raises KeyboardInterrupt, SIGTERM ends the process). A second
    signal while the first is pending is delivered at once. Only the main thread can install handlers; elsewhere
    signals behave as usual."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.received is not None:
            self.restore()
            signal.raise_signal(signum)
            return
        self.received = signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def deliver(self) -> None:
        """After the checkpoint: the pending signal, with the handlers that were there before `fit`."""
        received, self.received = self.received, None
        self.restore()
        if received is not None:
            signal.raise_signal(received)

    def __exit__(self, *exc: object) -> None:
        self.restore()


def _agree(accelerator: Accelerator, flags: list[bool]) -> list[bool]:
    """Each flag true on any process, on all processes (one small all-reduce): a checkpoint is collective."""
    if accelerator.num_processes == 1:
        return flags
    local = torch.tensor([float(f) for f in flags], device=accelerator.device)
    return [bool(v) for v in accelerator.reduce(local, reduction="sum").tolist()]


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[info]}"), disable=not enabled, transient=False)


def fit(job: TrainJob, accelerator: Accelerator, resume: bool = False) -> TrainSummary:
    """Train `job.module` for `job.total_steps` optimizer steps; resume from the latest checkpoint if asked."""
    cfg, module = job.config, job.module
    schedule = job.schedule or TermSchedule(module.loss.terms)
    plan = _check_layout(job, accelerator)  # None: replicated (one process, DDP); else FSDP2
    recompute_off = (sharding.activation_checkpointing(module.student, plan.block_classes if plan else (), job.where)
                     if cfg.activation_checkpointing else None)
    if plan is not None:  # in place, before the optimizer sees the parameters: it holds each process's shards
        sharding.shard_trained(module, plan, accelerator.device)
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise TrainingError(f"{job.name}: nothing to train (no parameter requires grad).")
    optimizer = make_optimizer(cfg, params)
    scheduler = make_scheduler(cfg, optimizer, job.total_steps)
    state, best_weights = LoopState(), None
    ckpt_dir = job.out_dir / "checkpoints"
    if resume and (path := latest_checkpoint(ckpt_dir)) is not None:
        load = load_checkpoint if plan is None else load_sharded_checkpoint
        state, best_weights = load(path, module, optimizer, scheduler)
        logger.info("%s: resumed from %s (step %d)", job.name, path, state.step)
    if plan is None:
        prepared, optimizer = accelerator.prepare(module, optimizer)
    else:
        prepared = module
    stepper = _plain_optimizer(accelerator, optimizer)
    sharded_teacher = plan is not None and isinstance(job.teacher, OnlineTeacher)
    # a teacher sharded when it was built (its weights on process 0 only) stays sharded: never gathered whole
    built_sharded = sharded_teacher and sharding.is_sharded(job.teacher.model)
    if sharded_teacher and not built_sharded:
        sharding.shard_frozen(job.teacher.model, plan, accelerator.device)
    elif job.teacher is not None:
        job.teacher.prepare(accelerator)
    main = accelerator.is_main_process
    steps_per_epoch = max(1, num_batches(len(job.data), cfg.batch_size) // cfg.grad_accum)
    eval_every = cfg.eval_every or steps_per_epoch
    ckpt_seconds = cfg.checkpoint_minutes * 60.0 if cfg.checkpoint_minutes else math.inf
    stream: Iterator[Batch] = iterate_batches(
        job.data, cfg.batch_size, seed=cfg.seed, start_step=state.step * cfg.grad_accum,
        process_index=accelerator.process_index, num_processes=accelerator.num_processes)
    log = _Log(job.out_dir / "log.jsonl", state, enabled=main)
    started, stopped_early = time.perf_counter(), False
    last_checkpoint = _clock()
    train_keys: dict[tuple[str, ...], tuple[str, ...]] = {}  # the step's terms -> their log keys
    prepared.train()
    with _progress(cfg.progress and main) as bar, _Interrupts() as interrupts:
        task = bar.add_task(job.name, total=job.total_steps, completed=state.step, info="")
        while state.step < job.total_steps and not stopped_early:
            sums: dict[str, float] = {}
            frozen = schedule.apply(module, state.step)  # the terms that count now; layers a stage holds still
            for micro in range(cfg.grad_accum):
                batch = _to_device(next(stream), accelerator.device)
                syncing = micro == cfg.grad_accum - 1
                share = None
                with contextlib.nullcontext() if syncing else accelerator.no_sync(prepared):
                    terms = job.step_fn(prepared, job.teacher, batch)
                    loss = terms["loss"] if cfg.grad_accum == 1 else terms["loss"] / cfg.grad_accum
                    if accelerator.num_processes > 1:  # DDP and FSDP average over processes: weight each by its share
                        share = _share(accelerator, getattr(module, "last_batch", None) or batch)
                        loss = loss * (share * accelerator.num_processes).to(loss.dtype)
                    accelerator.backward(loss)
                values = logged_values(terms, share)
                if cfg.grad_accum == 1:  # the usual case: the values as they are, no Python loop over the terms
                    sums = dict(zip(terms, values, strict=True))
                else:
                    for key, value in zip(terms, values, strict=True):
                        sums[key] = sums.get(key, 0.0) + value / cfg.grad_accum
            if accelerator.num_processes > 1:
                sums = _global_sum(accelerator, sums)
            if not math.isfinite(sums["loss"]):
                bad = _nonfinite_step(job, state, sums, ckpt_dir)
                stepper.zero_grad(set_to_none=True)
                scheduler.step()  # the step counts (data and schedule stay aligned); only the update is skipped
                state.step += 1
                log.write({"step": state.step, "epoch": state.step / steps_per_epoch, "lr": scheduler.get_last_lr()[0],
                           "nonfinite": bad, "nonfinite_skipped": state.nonfinite_skipped})
            else:
                for p in frozen:  # progressive transfer: layers below the current stage stay put
                    p.grad = None
                if cfg.grad_clip is not None and plan is not None:  # over the shards: one global norm
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                elif cfg.grad_clip is not None:
                    accelerator.clip_grad_norm_(params, cfg.grad_clip)
                stepper.step()
                scheduler.step()
                stepper.zero_grad(set_to_none=True)
                state.step += 1
                record = {"step": state.step, "epoch": state.step / steps_per_epoch, "lr": scheduler.get_last_lr()[0]}
                names = tuple(sums)  # the log keys of a set of terms are built once, not per term per step
                keys = train_keys.get(names) or train_keys.setdefault(names, tuple(f"train/{k}" for k in names))
                record.update(zip(keys, sums.values(), strict=True))
                log.write(record)
            if not bar.disable:
                bar.update(task, advance=1, info=f"loss {sums['loss']:.4f}")
            if job.validate is not None and (state.step % eval_every == 0 or state.step == job.total_steps):
                stopped_early, best_weights = _evaluate(job, accelerator, prepared, state, best_weights, log,
                                                        sharded=plan is not None)
            due = (state.step == job.total_steps or stopped_early
                   or (cfg.checkpoint_every is not None and state.step % cfg.checkpoint_every == 0))
            due, interrupted = _agree(accelerator, [due or _clock() - last_checkpoint >= ckpt_seconds,
                                                    interrupts.received is not None])
            if due or interrupted:
                if main:
                    state.log_bytes = log.flush()
                if plan is not None:  # every process writes its shards
                    save_sharded_checkpoint(ckpt_dir, prepared, optimizer, scheduler, state, best_weights,
                                            keep=cfg.keep_checkpoints)
                elif main:
                    save_checkpoint(ckpt_dir, accelerator.unwrap_model(prepared), optimizer, scheduler, state,
                                    best_weights, keep=cfg.keep_checkpoints)
                accelerator.wait_for_everyone()
                last_checkpoint = _clock()
            if interrupted:
                log.close()
                logger.warning("%s: interrupted at step %d; checkpoint written, resume with --resume.",
                               job.name, state.step)
                interrupts.deliver()
    log.close()
    if recompute_off is not None:
        recompute_off()
    if plan is not None:
        last_weights = _release(module, best_weights if cfg.select == "best" else None)
        if sharded_teacher and not built_sharded:
            sharding.release(job.teacher.model)
            job.teacher.model.eval()
    else:
        final = accelerator.unwrap_model(prepared)
        last_weights = None
        if cfg.select == "best" and best_weights is not None:
            last_weights = {k: v.detach().clone().cpu() for k, v in final.state_dict().items()}
            final.load_state_dict(best_weights)
    return TrainSummary(state.step, state.best_step, stopped_early, state.evals, time.perf_counter() - started,
                        last_weights, state.nonfinite_skipped)


def _check_layout(job: TrainJob, accelerator: Accelerator) -> sharding.ShardingPlan | None:
    """The FSDP2 plan when the launch asked for FSDP on several processes (one process trains unsharded), else
    None; DeepSpeed and Megatron are refused up front (their engines own the model, the loop and checkpoints)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM):
        raise TrainingError(
            f"{job.name}: accelerate is set up for {accelerator.distributed_type.value}, which kdforge's training "
            "loop does not support; use FSDP2 (accelerate launch --config_file examples/accelerate/fsdp.yaml) or "
            "DDP (examples/accelerate/ddp.yaml), see docs/llm.md."
        )
    plan = sharding.requested_plan(accelerator, job.where)
    if plan is not None and accelerator.num_processes == 1:
        logger.info("%s: FSDP asked for with one process: training unsharded.", job.name)
        return None
    return plan


def _release(module: nn.Module, best_weights: dict[str, Tensor] | None) -> dict[str, Tensor] | None:
    """After FSDP training: the module whole and plain again on every process (with the best weights when kept);
    returns the last weights when the best replaced them (`TrainSummary.last_weights`)."""
    last = None
    if best_weights is not None:
        last = sharding.full_state(module)
        sharding.load_snapshot(module, best_weights)
    sharding.release(module)
    return last


def process_share(local: Tensor, total: Tensor) -> Tensor:
    """This process's share of a global micro-batch, from (counted entries, rows) here and summed over processes:
    its counted entries over all of them, or its rows when no process has a counted entry.

    A loss averaged over the counted entries (tokens) of n_p entries on process p, weighted by n_p / sum n, adds up
    to the loss averaged over all entries of the global batch: several processes then optimise what one process
    does with the same global batch (gradients equal up to float rounding), however unevenly the entries fall."""
    counted = total[0] > 0
    return torch.where(counted, local[0] / total[0].clamp_min(1), local[1] / total[1].clamp_min(1))


def logged_values(terms: dict[str, Tensor], share: Tensor | None) -> list[float]:
    """The micro-batch's loss terms as floats, with one device sync for all of them (not one per term, nor one
    more for the share). With several processes (`share` given, 0-d float64) each is this process's part of the
    global batch's mean, value * share in float64 (as Python would multiply the floats), summed over the processes
    by `_global_sum`; a process with a share of 0 adds 0 even where its terms are NaN (no entry to average)."""
    values = torch.stack([v.detach().float() for v in terms.values()])
    if share is not None:
        share = share.to(values.device)  # a no-op where both live already (the loop's case)
        values = (values.double() * share).masked_fill(share == 0, 0.0)
    return values.tolist()


def _share(accelerator: Accelerator, batch: Batch) -> Tensor:
    """`process_share` of the batch the loss terms saw (one all-reduce of two numbers)."""
    rows = len(next(iter(batch.values())))
    local = torch.tensor([float(counted_entries(batch)), float(rows)], dtype=torch.float64, device=accelerator.device)
    return process_share(local, accelerator.reduce(local, reduction="sum"))


def _global_sum(accelerator: Accelerator, sums: dict[str, float]) -> dict[str, float]:
    """The loss terms over the whole global batch from each process's share-weighted parts (one all-reduce), so the
    logged curve, the non-finite check and early stopping agree on every process and with one process."""
    local = torch.tensor(list(sums.values()), dtype=torch.float64, device=accelerator.device)
    total = accelerator.reduce(local, reduction="sum").tolist()
    return dict(zip(sums, total, strict=True))


def _nonfinite_step(job: TrainJob, state: LoopState, sums: dict[str, float], ckpt_dir: Path) -> list[str]:
    """A NaN/inf loss: stop with the step, the bad term(s) and the last good checkpoint, or (train.nonfinite:
    skip) count the step as skipped and return the bad terms, until more than max_nonfinite were skipped."""
    cfg = job.config
    bad = [k for k, v in sums.items() if k != "loss" and not math.isfinite(v)] or ["loss"]
    where = (f"non-finite loss at step {state.step + 1} in term(s) {', '.join(bad)} "
             f"({', '.join(f'{k}={sums[k]}' for k in bad)})")
    if cfg.nonfinite == "skip" and state.nonfinite_skipped < cfg.max_nonfinite:
        state.nonfinite_skipped += 1
        logger.warning("%s: %s; step skipped (%d of at most %d, train.max_nonfinite).", job.name, where,
                       state.nonfinite_skipped, cfg.max_nonfinite)
        return bad
    last = last_finite_checkpoint(ckpt_dir)  # the newest may hold weights an update already sent to inf
    skipped = (f" after {state.nonfinite_skipped} skipped step(s), more than train.max_nonfinite={cfg.max_nonfinite}"
               if cfg.nonfinite == "skip" else "")
    raise TrainingError(
        f"{job.name}: {where}{skipped}. Last good checkpoint: {last if last else 'none (none holds finite weights)'}. "
        "Lower the learning rate or set train.grad_clip"
        + (", or set train.nonfinite: skip to skip such steps." if cfg.nonfinite == "stop" else ".")
    )


def _plain_optimizer(accelerator: Accelerator, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer to call `step`/`zero_grad` on. Accelerate's wrapper re-checks optional packages
    (importlib lookups) and inspects a signature on every call, about 0.3 ms a step on CPU: more than a tiny
    student's whole step. Without a gradient scaler (fp16) or XLA it only forwards to the wrapped
    optimizer, so the loop calls that directly; gradient accumulation here does not use Accelerate's."""
    from accelerate.utils import DistributedType

    inner = getattr(optimizer, "optimizer", None)
    if inner is None or accelerator.scaler is not None or accelerator.distributed_type in (
            DistributedType.XLA, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM):
        return optimizer
    return inner


def _evaluate(job: TrainJob, accelerator: Accelerator, prepared: nn.Module, state: LoopState,
              best_weights: dict[str, Tensor] | None, log: _Log, sharded: bool = False
              ) -> tuple[bool, dict[str, Tensor] | None]:
    """Validate, track the best value of `monitor` (maximised; a loss or mse minimised), and say whether
    patience ran out. A tie goes to the lower `val/loss`, then to the later step (see `_loss_tie_won`).

    Every process runs the validation forward (a sharded student needs them all); the main process's metrics
    are sent to all, so the best step and early stopping are decided alike everywhere. Under FSDP the best
    weights are kept as each process's shards."""
    cfg = job.config
    # DDP's wrapper holds the module; `unwrap_model` would also look for DeepSpeed on disk at every evaluation
    unwrapped = prepared if sharded else getattr(prepared, "module", prepared)
    prepared.eval()
    metrics = job.validate(unwrapped.student)
    prepared.train()
    if accelerator.num_processes > 1:
        shared = [metrics]
        torch.distributed.broadcast_object_list(shared, src=0)
        metrics = shared[0]
    state.evals.append({"step": state.step, **metrics})
    log.write({"step": state.step, **metrics})
    if cfg.monitor not in metrics:
        raise TrainingError(
            f"{job.where}.monitor: {cfg.monitor!r} is not a validation metric; choose one of {sorted(metrics)}."
        )
    value = metrics[cfg.monitor] * (-1.0 if cfg.monitor.endswith(("loss", "mse")) else 1.0)  # losses: minimised
    improved = state.best_value is None or value > state.best_value
    if improved or (value == state.best_value and _loss_tie_won(state, metrics)):
        state.best_value, state.best_step = value, state.step
        if cfg.select == "best" and sharded:
            best_weights = sharding.snapshot(unwrapped)
        elif cfg.select == "best":
            best_weights = {k: v.detach().clone().cpu() for k, v in unwrapped.state_dict().items()}
    state.evals_since_best = 0 if improved else state.evals_since_best + 1  # patience counts the monitor only
    return cfg.patience is not None and state.evals_since_best >= cfg.patience, best_weights


def _loss_tie_won(state: LoopState, metrics: dict[str, float]) -> bool:
    """On a tie of the monitored value, this evaluation wins unless the kept step had a lower `val/loss`: on a
    small validation set many steps tie, and the first of them is rarely the best one."""
    kept = next((e for e in reversed(state.evals) if e["step"] == state.best_step), {})
    if "val/loss" in metrics and "val/loss" in kept:
        return metrics["val/loss"] <= kept["val/loss"]
    return True
